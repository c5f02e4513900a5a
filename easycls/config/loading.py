"""Config defaults, a typed schema, validation and ``key=value`` overrides.

A config is a plain dict. ``load_config`` reads ``cfg`` from a Python file (the user's ``config.py``), fills in
defaults, applies command-line overrides parsed as Python literals, and validates every key before anything else
happens, so a typo costs one clear line instead of a crashed run.
"""
import ast
import difflib
import os
import runpy
from typing import Iterable, Optional, Tuple, Union

from easycls.config.schema import KEY_SPELLINGS, SCHEMA, _int_ge, defaults
from easycls.core.errors import ConfigError


def _unknown(key: str) -> ConfigError:
    close = difflib.get_close_matches(key, list(SCHEMA), n=1, cutoff=0.5)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return ConfigError(f"unknown config key '{key}'{hint}")


def _gpu_id_as_text(cfg: dict) -> None:
    """On the command line GPU_ID=1 reads as the int 1 and GPU_ID=0,1 as a tuple: the text they stand for."""
    gpu = cfg.get("GPU_ID")
    if _int_ge(0)(gpu):
        cfg["GPU_ID"] = str(gpu)
    elif isinstance(gpu, (list, tuple)) and gpu and all(map(_int_ge(0), gpu)):
        cfg["GPU_ID"] = ",".join(map(str, gpu))


def validate(cfg: dict) -> dict:
    """Check every key and value; return ``cfg``. Raises :class:`ConfigError`."""
    _gpu_id_as_text(cfg)
    for key, value in cfg.items():
        if key not in SCHEMA:
            raise _unknown(key)
        if not SCHEMA[key].ok(value):
            raise ConfigError(f"bad value for '{key}': {value!r}; allowed: {SCHEMA[key].allowed}")
    _check_relations(cfg)
    return cfg


def _check_relations(cfg: dict) -> None:
    weights = cfg.get("class_weight")
    if isinstance(weights, (list, tuple)) and len(weights) != cfg["class_number"]:
        raise ConfigError(f"class_weight has {len(weights)} values but class_number is {cfg['class_number']}")
    for key in ("val_fold", "start_fold"):
        if cfg[key] is not None and cfg[key] >= cfg["k_flod"]:
            raise ConfigError(f"{key}={cfg[key]} must be below k_flod={cfg['k_flod']}")
    for key in ("mean", "std"):
        if cfg[key] is not None and len(cfg[key]) not in (1, cfg["channels"]):
            raise ConfigError(f"'{key}' has {len(cfg[key])} values; give 1 or channels={cfg['channels']}")
    if cfg["sample_weights"] not in (None, "", "balanced") and not os.path.isfile(cfg["sample_weights"]):
        raise ConfigError(f"sample_weights file not found: {cfg['sample_weights']}; give None, 'balanced' or a CSV "
                          f"of image_id,weight")
    if cfg["label_type"] == "DIR" and cfg["monitor"] == "val_mAP":
        raise ConfigError("monitor='val_mAP' scores multi-label models, which train from a labels CSV; class folders "
                          "hold one label per image: use val_acc, val_f1 or val_loss")
    if cfg["label_type"] == "DIR" and cfg["multi_label"]:
        raise ConfigError("multi_label=True needs label_type='CSV': class folders hold one label per image; give "
                          "the labels in label_path (image_id,labels with names separated by '|', or 0/1 columns)")
    if cfg["label_type"] == "CSV" and not os.path.isfile(cfg["label_path"]):
        raise ConfigError(f"label_type='CSV' needs label_path, a CSV of image_id,label[,split]; "
                          f"not found: {cfg['label_path']!r}")
    if cfg["tensorboard"]:
        from easycls.engine.hooks import require_tensorboard  # start-up time
        require_tensorboard()
    if cfg["class_names"] and len(cfg["class_names"]) != cfg["class_number"]:
        raise ConfigError(f"class_names lists {len(cfg['class_names'])} names but class_number is "
                          f"{cfg['class_number']}")


def parse_override(text: str):
    """Split ``key=value`` and parse the value as a Python literal, falling back to the raw string."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' is not of the form key=value")
    key, raw = text.split("=", 1)
    key = key.strip().lstrip("-")
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        value = raw
    return key, value


def read_config_file(path: str, chain: Tuple[str, ...] = ()) -> dict:
    """Run a config file (the user's own Python) and return its ``cfg`` merged over its ``_base_`` files.

    ``_base_`` is a path relative to the file, or a list of them (later ones win); bases may have bases.
    """
    if not os.path.isfile(path):
        where = f" (the _base_ of {chain[-1]})" if chain else ""
        raise ConfigError(f"config file not found: {path}{where}")
    if os.path.realpath(path) in map(os.path.realpath, chain):
        raise ConfigError(f"config _base_ cycle: {' -> '.join(chain + (path,))}")
    namespace = runpy.run_path(path)
    bases = namespace.get("_base_", [])
    bases = [bases] if isinstance(bases, str) else bases
    if not (isinstance(bases, (list, tuple)) and all(isinstance(b, str) for b in bases)):
        raise ConfigError(f"{path}: _base_ must be a file name or a list of file names, got {bases!r}")
    cfg = namespace.get("cfg", {} if bases else None)
    if not isinstance(cfg, dict):
        raise ConfigError(f"{path} must define cfg = dict(...)")
    merged = {}
    for base in bases:
        merged.update(read_config_file(os.path.join(os.path.dirname(path), base), chain + (path,)))
    return {**merged, **cfg}


def load_config(path: Optional[str] = None, overrides: Iterable[str] = ()) -> dict:
    """Defaults, then the config file (``config.py`` in the working folder if present), then ``key=value``
    overrides."""
    if path is None and os.path.isfile("config.py"):
        path = "config.py"
    return make_config(path, dict(map(parse_override, overrides)))


def make_config(config: Union[str, os.PathLike, dict, None] = None, overrides: Optional[dict] = None) -> dict:
    """Defaults, then ``config`` (a config file's path, a dict of keys, or None for the defaults alone), then
    ``overrides``; validated. Raises :class:`ConfigError` with the same one-line messages as the command line."""
    cfg = defaults()
    if isinstance(config, (str, os.PathLike)):
        cfg.update(_spelled(read_config_file(os.fspath(config))))
    elif isinstance(config, dict):
        cfg.update(_spelled(config))
    elif config is not None:
        raise ConfigError(f"config must be a config file's path, a dict or None; got {type(config).__name__}")
    for key, value in (overrides or {}).items():
        key = KEY_SPELLINGS.get(key, key)
        if key not in SCHEMA:
            raise _unknown(key)
        cfg[key] = value
    return validate(cfg)


def _spelled(cfg: dict) -> dict:
    """The seed's key names for the keys that have a second spelling (``k_fold`` is ``k_flod``)."""
    return {KEY_SPELLINGS.get(k, k): v for k, v in cfg.items()}
