# QEMU 10.0 from bookworm-backports, unpacked into a private prefix beside Debian's 7.2.
# The lab runs it as $MIGPROF_CACHE/qemu-10.0/usr/bin/qemu-system-x86_64 with
# -L $MIGPROF_CACHE/qemu-10.0/usr/share/qemu and QEMU_MODULE_DIR pointing at its own
# modules (profiler/lab/qemu.py does both). Nothing is installed system-wide, so the
# Debian 7.2 package stays the default QEMU.
# Also the guest build needs gcc able to emit 32-bit code (-m32 -ffreestanding).
need_pkgs gcc binutils qemu-system-x86 seabios ipxe-qemu

Q10_PREFIX="$MIGPROF_CACHE/qemu-10.0"
Q10_STAMP="$Q10_PREFIX/.migprof-unpacked"
if [ ! -x "$Q10_PREFIX/usr/bin/qemu-system-x86_64" ] || [ ! -f "$Q10_STAMP" ]; then
  if ! apt-cache policy qemu-system-x86 | grep -q bookworm-backports; then
    APT_UPDATED=0
    apt_update_once
  fi
  Q10_DEBS="$MIGPROF_CACHE/debs/qemu-10.0"
  rm -rf "$Q10_DEBS" "$Q10_PREFIX.tmp"
  mkdir -p "$Q10_DEBS" "$Q10_PREFIX.tmp"
  log "apt-get download QEMU 10.0 from bookworm-backports into $Q10_DEBS"
  # apt's sandbox user cannot write to a root-only directory; download from a
  # directory it can see, which also keeps the W: message away
  chmod 755 "$Q10_DEBS"
  if ! (cd "$Q10_DEBS" && apt-get -q download \
      qemu-system-x86/bookworm-backports \
      qemu-system-common/bookworm-backports \
      qemu-system-data/bookworm-backports >/dev/null 2>&1); then
    log "apt-get download of QEMU 10.0 from bookworm-backports failed (is the backports source reachable?)"
    exit 2
  fi
  for deb in "$Q10_DEBS"/*.deb; do
    dpkg-deb -x "$deb" "$Q10_PREFIX.tmp"
  done
  missing=$(ldd "$Q10_PREFIX.tmp/usr/bin/qemu-system-x86_64" | awk '/not found/ {print $1}')
  if [ -n "$missing" ]; then
    log "QEMU 10.0 needs libraries that are missing: $missing"
    exit 2
  fi
  rm -rf "$Q10_PREFIX"
  mv "$Q10_PREFIX.tmp" "$Q10_PREFIX"
  "$Q10_PREFIX/usr/bin/qemu-system-x86_64" --version | head -1 > "$Q10_STAMP"
  log "QEMU 10.0 in $Q10_PREFIX: $(cat "$Q10_STAMP")"
fi
