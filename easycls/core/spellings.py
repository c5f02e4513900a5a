"""The reference project's misspelt config keys, and the clear names that replace them.

``config.py``, the schema and every message use the clear names (``k_fold``, ``early_stop_patience``). The old
spellings keep working wherever a config is read: config files, ``key=value`` overrides, dicts, and the configs
older runs saved (``config.json`` and the ``config`` entry of a checkpoint). The table lives in core so that the
readers of saved configs below the config layer (the report) map them as the config layer does.
"""
from typing import Dict

from easycls.core.errors import ConfigError

OLD_SPELLINGS: Dict[str, str] = {"k_flod": "k_fold", "early_stop_patient": "early_stop_patience"}


def clear_name(key: str) -> str:
    """The clear name of a config key: ``'k_flod'`` -> ``'k_fold'``; any other key unchanged."""
    return OLD_SPELLINGS.get(key, key)


def clear_names(cfg: dict, source: str = "the config") -> dict:
    """A copy of ``cfg`` with every old spelling renamed to its clear name, in the same order.

    One source (a file, a dict, a saved config) that gives a key under both spellings with different values is a
    :class:`ConfigError` naming both, since neither can be said to win.
    """
    for old, new in OLD_SPELLINGS.items():
        if old in cfg and new in cfg and cfg[old] != cfg[new]:
            raise ConfigError(f"{source} sets both {old}={cfg[old]!r} and {new}={cfg[new]!r}; {old} is the old "
                              f"spelling of {new}: keep one")
    return {clear_name(key): value for key, value in cfg.items()}
