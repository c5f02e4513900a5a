"""Exceptions the command line turns into one clear line and a non-zero exit."""
import sys


class EasyclsError(Exception):
    """Base class: a problem with the user's input, shown without a traceback."""


class ConfigError(EasyclsError, ValueError):
    """A config key or value is not allowed."""


class SpecError(ConfigError):
    """A loss, optimizer or scheduler spec string is malformed or unknown."""


class DataError(EasyclsError):
    """The dataset on disk does not have the expected layout or content."""


class CheckpointError(EasyclsError):
    """A checkpoint or pretrained file cannot be used."""


class TrainingError(EasyclsError):
    """Training cannot go on (for example, the loss stopped being finite)."""


def exit_code(command) -> int:
    """Run ``command()``; an :class:`EasyclsError` becomes ``error: ...`` on stderr and exit code 2.

    Returns the command's own exit code when it returns an int, else 0.
    """
    try:
        result = command()
        return result if isinstance(result, int) else 0
    except EasyclsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
