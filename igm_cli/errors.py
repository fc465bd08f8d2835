"""The one exception hierarchy; each class carries the exit code documented in README."""


class IgmError(Exception):
    """Base of every error the CLI reports as one line."""

    exit_code = 1


class UsageError(IgmError):
    """Bad command-line usage."""

    exit_code = 2


class PresetError(IgmError):
    """An invalid preset or override (names every offending field)."""

    exit_code = 2


class DataError(IgmError):
    """Missing, corrupt or mismatched data."""

    exit_code = 3


class CheckpointError(IgmError):
    """Missing, corrupt or incompatible checkpoint."""

    exit_code = 3


class DivergedError(IgmError):
    """Training produced a non-finite loss."""

    exit_code = 4


EXIT_INTERRUPTED = 130


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM, carrying the one line that says what was saved."""
