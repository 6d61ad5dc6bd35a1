"""migprof model."""
