"""migprof commands."""
