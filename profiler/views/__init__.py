"""migprof views."""
