"""User-facing errors and the exit codes, defined in one place."""

from __future__ import annotations

EXIT_OK = 0
EXIT_REGRESSION = 1  # compare found a regression
EXIT_USAGE = 2  # usage or unusable input


class MigprofError(Exception):
    """An error the user can fix; printed as one line, no traceback."""

    exit_code = EXIT_USAGE


class InputError(MigprofError):
    """Unusable input: names the file, and the line or field when known."""

    def __init__(self, path: str, message: str, line: int | None = None, field: str | None = None):
        self.path = str(path)
        self.line = line
        self.field = field
        self.message = message
        where = self.path
        if line is not None:
            where += f":{line}"
        if field is not None:
            where += f": field {field!r}"
        super().__init__(f"{where}: {message}")


class SetupError(MigprofError):
    """The host lacks something (package, privilege, kernel feature); says what to do."""
