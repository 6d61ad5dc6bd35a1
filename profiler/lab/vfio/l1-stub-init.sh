#!/bin/sh
# PID 1 of the L1 guest (installed in the image as /sbin/migprof-init). Kept tiny
# on purpose: it mounts the repository share and hands over to the repository's
# l1-init.sh, so changing the experiment never requires rebuilding the image.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
echo "migprof-l1: init started" >/dev/console
modprobe 9pnet_virtio && modprobe 9p
if mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144,ro repo /repo &&
   mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 results /results; then
  sh /repo/profiler/lab/vfio/l1-init.sh
  echo "migprof-l1: init finished rc=$?" >/dev/console
else
  echo "migprof-l1: STEP 9p-mount failed" >/dev/console
fi
sync
echo o >/proc/sysrq-trigger
sleep 30
