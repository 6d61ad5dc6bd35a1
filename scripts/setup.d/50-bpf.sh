# BPF collector (issue 5): bcc, bpftrace/strace for the benchmark, FUSE and SDT headers for
# the tests' VFIO and dtrace stand-ins, and kernel headers bcc can compile against.
need_pkgs bpfcc-tools python3-bpfcc bpftrace strace gcc pkg-config fuse3 libfuse3-dev systemtap-sdt-dev
# bcc compiles with -I<source>/include: Debian splits headers into -amd64 (generated,
# config) and -common (include/linux/kconfig.h ...). Point "source" at -common when the
# "build" tree lacks the kconfig header, else bcc fails with "kconfig.h file not found".
KREL=$(uname -r)
KDIR=/lib/modules/$KREL
if [ -e "$KDIR/build/Makefile" ] && [ ! -e "$KDIR/build/include/linux/kconfig.h" ] \
   && [ ! -e "$KDIR/source/include/linux/kconfig.h" ]; then
  BUILD=$(readlink -f "$KDIR/build")
  COMMON=${BUILD%-*}-common
  if [ -e "$COMMON/include/linux/kconfig.h" ]; then
    ln -sfn "$COMMON" "$KDIR/source"
    log "linked $KDIR/source -> $COMMON (bcc needs the common kernel headers)"
  fi
fi
# tracefs (the syscall tracepoints live there); migprof mounts it itself too
if [ ! -e /sys/kernel/tracing/events ]; then
  mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null || true
fi
