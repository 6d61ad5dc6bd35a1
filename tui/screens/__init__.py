"""TUI screens: the main dashboard, help, jump-to-time."""
