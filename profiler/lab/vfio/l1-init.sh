#!/bin/sh
# The experiment inside L1, started by the image's PID 1 (l1-stub-init.sh) with the
# repository at /repo (read-only) and the host's results directory at /results.
# Each step writes its name to /results/step first; on failure /results/status says
# "failed <step>: <why>", so the host can name the step that broke.
R=/results
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
step() { echo "$1" >"$R/step"; echo "migprof-l1: STEP $1" >/dev/console; }
fail() { echo "failed $1: $2" >"$R/status"; echo "migprof-l1: failed $1: $2" >/dev/console
         dmesg >"$R/dmesg.txt" 2>/dev/null; exit 1; }

step mounts
mount -t tmpfs tmpfs /tmp
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
ip link set lo up || fail mounts "cannot bring up loopback"
uname -r >"$R/l1-kernel"

step modules
MODULES="vfio vfio_iommu_type1 mdev mtty"
# the host may name other modules (tests use it to make a module fail to load)
[ -f "$R/modules" ] && MODULES=$(cat "$R/modules")
for m in $MODULES; do
  out=$(modprobe "$m" 2>&1) || fail modules "modprobe $m: $out"
done

step mdev
TYPES=/sys/devices/virtual/mtty/mtty/mdev_supported_types
[ -d "$TYPES/mtty-2" ] || fail mdev "mtty loaded but $TYPES/mtty-2 is missing"
SRC=$(cat /proc/sys/kernel/random/uuid)
DST=$(cat /proc/sys/kernel/random/uuid)
for u in "$SRC" "$DST"; do
  echo "$u" >"$TYPES/mtty-2/create" || fail mdev "cannot create mtty-2 instance $u"
  [ -e "/sys/bus/mdev/devices/$u" ] || fail mdev "/sys/bus/mdev/devices/$u did not appear"
done

step diag
{
  echo "kernel $(uname -r)"; grep -E 'vfio_device_fops_unl_ioctl|mtty_save_read|mtty_resume_write|mtty_precopy_ioctl' /proc/kallsyms
  ls /sys/kernel/tracing/kprobe_events /sys/kernel/debug/kprobes/blacklist /sys/kernel/debug/tracing/available_filter_functions 2>&1
  grep -c . /sys/kernel/debug/kprobes/blacklist
  grep -E 'vfio_device_fops_unl_ioctl|mtty' /sys/kernel/debug/tracing/available_filter_functions | head
  mount
} >"$R/diag.txt" 2>&1
# an optional probe script the host put in the results directory (development aid)
if [ -f "$R/diag.py" ]; then
  PYTHONPATH=/repo PYTHONDONTWRITEBYTECODE=1 timeout 600 /opt/migprof-venv/bin/python "$R/diag.py" >"$R/diag-py.txt" 2>&1
fi

step runner
cd /
PYTHONPATH=/repo PYTHONDONTWRITEBYTECODE=1 timeout "${MIGPROF_L1_RUNNER_TIMEOUT:-1200}" \
  /opt/migprof-venv/bin/python -m profiler.lab.vfio.runner --job "$R/job.json" \
  --source-uuid "$SRC" --destination-uuid "$DST" >"$R/runner.log" 2>&1
rc=$?
dmesg >"$R/dmesg.txt" 2>/dev/null
for u in "$SRC" "$DST"; do echo 1 >"/sys/bus/mdev/devices/$u/remove" 2>/dev/null; done
if [ "$rc" = 0 ]; then echo ok >"$R/status"; else echo "failed runner: rc $rc (see runner.log)" >"$R/status"; fi
step done
