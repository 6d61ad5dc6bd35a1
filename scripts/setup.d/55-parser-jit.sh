# Compile the trace-log parser's numba scanners once (cached in profiler/sources/__pycache__),
# so the first `migprof report` or test does not wait for the compiler. Quick when cached.
if ! .venv/bin/python -c 'import sys; from profiler.sources.qemu_log import parse_bytes
parse_bytes(b"1@1.000001:migrate_set_state new state setup\nvfio_save_block  (d) data_size 1\n")' ; then
  log "warning: could not warm the parser's compiled scanners"
fi
