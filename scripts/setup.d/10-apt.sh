# Debian packages, including bookworm-backports as a source (QEMU 10.0, kernel 6.12).
if [ ! -f /etc/apt/sources.list.d/migprof-backports.list ] && ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
  echo 'deb http://deb.debian.org/debian bookworm-backports main' > /etc/apt/sources.list.d/migprof-backports.list
  APT_UPDATED=0
  apt_update_once
fi
need_pkgs qemu-system-x86 qemu-utils gcc make libc6-dev python3-venv \
  bpfcc-tools python3-bpfcc linux-headers-amd64 bpftrace strace \
  fuse3 libfuse3-dev pkg-config systemtap-sdt-dev iproute2 tmux
