"""migprof sources."""
