# bcc compiles against kernel headers; the running kernel ships none, so point
# /lib/modules/$(uname -r)/{build,source} at Debian's linux-headers-amd64.
KREL=$(uname -r)
if [ ! -e "/lib/modules/$KREL/build/Makefile" ]; then
  HDR=$(ls -d /usr/src/linux-headers-*-amd64 2>/dev/null | sort -V | tail -1)
  if [ -n "$HDR" ]; then
    mkdir -p "/lib/modules/$KREL"
    ln -sfn "$HDR" "/lib/modules/$KREL/build"
    ln -sfn "$HDR" "/lib/modules/$KREL/source"
    log "linked /lib/modules/$KREL/build -> $HDR"
  fi
fi
# tracefs is not mounted at boot here
if [ ! -e /sys/kernel/tracing/events ] && ! mountpoint -q /sys/kernel/tracing; then
  mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null || true
fi
if [ ! -e /sys/kernel/debug/tracing ] && [ -d /sys/kernel/debug ]; then
  mountpoint -q /sys/kernel/debug || mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null || true
fi
