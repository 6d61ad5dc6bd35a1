# Host tools that build the nested VFIO lab's L1 image (issue 4). The image itself
# (about 3 GB) is NOT built here: `migprof lab --vfio mtty` and the vfio_lab tests
# build it on first use under $MIGPROF_CACHE/vfio-l1/ and rebuild it when its inputs
# change. The kernel, its headers, linux-source-6.12 (for mtty.c) and QEMU 10.0 are
# installed inside the image's own root, so the host needs only these.
need_pkgs debootstrap e2fsprogs util-linux xz-utils ca-certificates
