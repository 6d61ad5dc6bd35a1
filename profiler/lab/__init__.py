"""migprof lab."""
