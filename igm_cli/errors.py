"""The one exception hierarchy; each class carries the exit code documented in README.

`kind` is the machine-readable name of the error class, printed under `--json` as
`{"error": {"message", "exit_code", "kind"}}`.
"""


class IgmError(Exception):
    """Base of every error the CLI reports as one line."""

    exit_code = 1
    kind = "error"


class UsageError(IgmError):
    """Bad command-line usage."""

    exit_code = 2
    kind = "usage"


class PresetError(IgmError):
    """An invalid preset or override (names every offending field)."""

    exit_code = 2
    kind = "preset"


class DataError(IgmError):
    """Missing, corrupt or mismatched data."""

    exit_code = 3
    kind = "data"


class CheckpointError(IgmError):
    """Missing, corrupt or incompatible checkpoint."""

    exit_code = 3
    kind = "checkpoint"


class DivergedError(IgmError):
    """Training produced a non-finite loss."""

    exit_code = 4
    kind = "diverged"


EXIT_INTERRUPTED = 130


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM, carrying the one line that says what was saved."""
