"""Exceptions the command line turns into one clear line and a non-zero exit."""


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
