"""migprof Textual TUI."""
