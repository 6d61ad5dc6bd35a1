#!/usr/bin/env bash
# Build the nested VFIO lab's L1 guest: Debian bookworm + kernel 6.12 + QEMU 10.0 +
# bcc + mtty.ko + a venv with migprof's dependencies, packed into an ext4 image.
#
# USAGE: build-image.sh OUT_DIR        (run by profiler.lab.vfio.image, as root)
#   env: MIGPROF_L1_PIP   space-separated pip requirements for the venv
#        MIGPROF_L1_MIRROR Debian mirror (default http://deb.debian.org/debian)
#        MIGPROF_L1_SIZE_MB minimum image size
# Writes OUT_DIR/{vmlinuz,initrd.img,l1.ext4,manifest.env}. Each step prints
# "STEP <name>" to stderr first, so the caller can say which step failed. Runs in
# a private mount namespace (unshare -m): every mount made here disappears with it.
set -euo pipefail
OUT=${1:?usage: build-image.sh OUT_DIR}
HERE=$(cd "$(dirname "$0")" && pwd)
MIRROR=${MIGPROF_L1_MIRROR:-http://deb.debian.org/debian}
PIP_REQS=${MIGPROF_L1_PIP:-}
# the host's pip (with the host's index, CA and constraints settings) downloads the
# wheels; the chroot installs them offline
PIP_HOST=${MIGPROF_L1_PIP_HOST:-python3 -m pip}
MIN_MB=${MIGPROF_L1_SIZE_MB:-3072}

step() { printf 'STEP %s\n' "$1" >&2; LOG="$OUT/$1.log"; }
# run one command of the current step, its output in the step's log; on failure show
# the log's tail and stop (set -e does not reach into "cmd || handler" groups)
logged() { "$@" >>"$LOG" 2>&1 || { tail -25 "$LOG" >&2; exit 1; }; }

if [ -z "${MIGPROF_L1_UNSHARED:-}" ]; then
  # re-exec in a private mount namespace so no mount can outlive the build
  export MIGPROF_L1_UNSHARED=1
  exec unshare --mount --propagation private -- "$0" "$@"
fi

ROOT=$OUT/rootfs
mkdir -p "$OUT"

step debootstrap
# minbase keeps the image small; everything else comes from apt in the chroot
logged debootstrap --variant=minbase \
  --include=ca-certificates,kmod,iproute2,procps,python3,python3-venv,xz-utils \
  bookworm "$ROOT" "$MIRROR"

step chroot-setup
cat >"$ROOT/etc/apt/sources.list" <<EOS
deb $MIRROR bookworm main
deb $MIRROR bookworm-updates main
deb http://deb.debian.org/debian-security bookworm-security main
deb $MIRROR bookworm-backports main
EOS
cp -L /etc/resolv.conf "$ROOT/etc/resolv.conf"
# no daemons may start inside the chroot
printf '#!/bin/sh\nexit 101\n' >"$ROOT/usr/sbin/policy-rc.d"
chmod +x "$ROOT/usr/sbin/policy-rc.d"
mount -t proc proc "$ROOT/proc"
mount -t sysfs sysfs "$ROOT/sys"
mount --bind /dev "$ROOT/dev"
mount -t tmpfs tmpfs "$ROOT/tmp"
in_root() { chroot "$ROOT" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
  DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8 HOME=/root "$@"; }
APT="apt-get -o DPkg::Lock::Timeout=600 -y -q --no-install-recommends"

step packages
logged in_root apt-get update -q
# the kernel, its headers and its source come from one upload, so mtty.ko
# built from this source against these headers matches this kernel
logged in_root $APT install initramfs-tools linux-image-6.12-amd64 linux-headers-6.12-amd64 \
  linux-source-6.12 gcc-12 make bpfcc-tools python3-bpfcc strace
logged in_root $APT install -t bookworm-backports qemu-system-x86 qemu-system-data qemu-utils
KVER=$(basename "$(ls -d "$ROOT"/lib/modules/6.12.* | sort -V | tail -1)")
[ -n "$KVER" ] || { echo "no 6.12 kernel installed in the image" >&2; exit 1; }

step venv
mkdir -p "$ROOT/tmp/wheels"
# shellcheck disable=SC2086
logged $PIP_HOST download -q -d "$ROOT/tmp/wheels" $PIP_REQS
logged in_root python3 -m venv /opt/migprof-venv
# shellcheck disable=SC2086
logged in_root /opt/migprof-venv/bin/pip install -q --no-index --find-links /tmp/wheels $PIP_REQS
SITE=$(in_root /opt/migprof-venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
# Debian's bcc, never PyPI's unrelated "bcc"
ln -sfn /usr/lib/python3/dist-packages/bcc "$ROOT$SITE/bcc"
logged in_root /opt/migprof-venv/bin/python -c 'import pandas, pyarrow, qemu.qmp, bcc; bcc.BPF'
rm -rf "$ROOT/tmp/wheels"

step mtty-build
mkdir -p "$ROOT/tmp/mtty"
logged tar -xJf "$ROOT"/usr/src/linux-source-6.12.tar.xz -C "$ROOT/tmp/mtty" \
  --wildcards '*/samples/vfio-mdev/mtty.c' --strip-components=3
printf 'obj-m := mtty.o\n' >"$ROOT/tmp/mtty/Makefile"
logged in_root make -C "/lib/modules/$KVER/build" M=/tmp/mtty CC=gcc-12 modules
logged install -D -m 0644 "$ROOT/tmp/mtty/mtty.ko" "$ROOT/lib/modules/$KVER/updates/mtty.ko"
logged in_root depmod "$KVER"
# the 150 MB source tarball was only needed for mtty.c
logged in_root $APT purge linux-source-6.12
VERMAGIC=$(in_root modinfo -k "$KVER" -F vermagic mtty | awk '{print $1}')
if [ "$VERMAGIC" != "$KVER" ]; then
  echo "mtty.ko vermagic $VERMAGIC does not match kernel $KVER" >&2; exit 1
fi

step initramfs
printf 'virtio_pci\nvirtio_blk\next4\n' >>"$ROOT/etc/initramfs-tools/modules"
logged in_root update-initramfs -u -k "$KVER"
cp "$ROOT/boot/vmlinuz-$KVER" "$OUT/vmlinuz"
cp "$ROOT/boot/initrd.img-$KVER" "$OUT/initrd.img"

step init
install -m 0755 "$HERE/l1-stub-init.sh" "$ROOT/sbin/migprof-init"
mkdir -p "$ROOT/repo" "$ROOT/results"
QEMU_VER=$(in_root /usr/bin/qemu-system-x86_64 --version | head -1)
BCC_VER=$(in_root dpkg-query -W -f='${Version}' python3-bpfcc)

step cleanup
umount "$ROOT/tmp" "$ROOT/dev" "$ROOT/sys" "$ROOT/proc"
in_root apt-get clean
rm -rf "$ROOT"/var/lib/apt/lists/* "$ROOT"/usr/share/doc/* "$ROOT"/usr/share/man/* "$ROOT/tmp"/*
rm -f "$ROOT/usr/sbin/policy-rc.d"

step mkfs
USED_MB=$(du -sm "$ROOT" | awk '{print $1}')
SIZE_MB=$(( USED_MB * 13 / 10 + 512 ))
[ "$SIZE_MB" -ge "$MIN_MB" ] || SIZE_MB=$MIN_MB
rm -f "$OUT/l1.ext4"
truncate -s "${SIZE_MB}M" "$OUT/l1.ext4"
logged mkfs.ext4 -q -F -L migprof-l1 -E root_owner=0:0 -d "$ROOT" "$OUT/l1.ext4"

step manifest
cat >"$OUT/manifest.env" <<EOM
KVER=$KVER
QEMU_VERSION="$QEMU_VER"
BCC_VERSION=$BCC_VER
IMAGE_MB=$SIZE_MB
ROOTFS_MB=$USED_MB
EOM
rm -rf "$ROOT"
step done
