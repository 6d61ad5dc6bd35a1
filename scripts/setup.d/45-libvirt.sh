# libvirt for `migprof live --domain` and `migprof lab --libvirt` (docs/libvirt.md).
#
# Debian's daemon and QEMU driver (9.0), virsh, and Debian's python3-libvirt linked into
# .venv as bcc is. Why Debian's binding and not PyPI's libvirt-python: it is built
# against the very libvirt0 the daemon ships (same 9.0 API, no version skew), needs no C
# compiler, libvirt-dev or pkg-config at install time (the PyPI package is source only
# and compiles for a minute on this host), and `apt` keeps it updated with the daemon.
#
# libvirt-daemon-system (which creates the libvirt-qemu user the QEMU driver resolves at
# start-up, even with user = "root" in qemu.conf) is not installed: its postinst wants
# systemd and stops at a conffile prompt when stdin is not a terminal. The user and
# group are created here instead; the lab runs its daemons with its own configuration.
need_pkgs libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients python3-libvirt

if ! getent group libvirt-qemu >/dev/null; then
  log "groupadd libvirt-qemu"
  groupadd --system libvirt-qemu
fi
if ! getent passwd libvirt-qemu >/dev/null; then
  log "useradd libvirt-qemu"
  useradd --system --gid libvirt-qemu --home-dir /var/lib/libvirt --no-create-home \
    --shell /usr/sbin/nologin --comment "Libvirt Qemu" libvirt-qemu
fi
# mount points for the lab daemons' private directories (bound over these, each in the
# daemon's own mount namespace); the package would create them with the daemon's units
mkdir -p /var/lib/libvirt /var/log/libvirt /var/cache/libvirt

SITE=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
for f in /usr/lib/python3/dist-packages/libvirt.py /usr/lib/python3/dist-packages/libvirt_qemu.py \
         /usr/lib/python3/dist-packages/libvirtaio.py \
         /usr/lib/python3/dist-packages/libvirtmod*.so; do
  [ -e "$f" ] || continue
  [ -e "$SITE/$(basename "$f")" ] || ln -sfn "$f" "$SITE/$(basename "$f")"
done
