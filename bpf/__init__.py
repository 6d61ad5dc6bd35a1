"""migprof BPF programs (package data: *.bpf.c and shared headers)."""
