"""migprof: a profiler for QEMU live migration with VFIO devices."""

__version__ = "0.1.0"
