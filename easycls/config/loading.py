"""Config loading: ``_base_`` inheritance, ``key=value`` overrides, old key spellings and validation.

A config is a plain dict. ``load_config`` takes ``cfg`` from a Python file (the user's ``config.py``), a run's
``config.json`` or a dict, fills in defaults, applies overrides (command-line ``key=value`` parsed as Python
literals, or a dict), and validates every key before anything else happens, so a typo costs one clear line instead
of a crashed run. The reference project's misspelt keys (``k_flod``, ``early_stop_patient``) are read as their
clear names everywhere.
"""
import ast
import difflib
import json
import logging
import os
import runpy
from typing import Dict, Iterable, List, Mapping, Optional, Tuple, Union

from easycls.config.schema import SCHEMA, _int_ge, defaults
from easycls.core import files
from easycls.core.errors import ConfigError
from easycls.core.spellings import OLD_SPELLINGS, clear_name, clear_names

log = logging.getLogger(__name__)


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
    """Check every key and value; return ``cfg``, with old key spellings renamed in place. Raises
    :class:`ConfigError`.

    An old spelling wins over its clear name here: in a dict merged over :func:`defaults` (a saved config of an
    older run, say) the clear name holds the default and the old spelling what the run used.
    """
    for old, new in OLD_SPELLINGS.items():
        if old in cfg:
            cfg[new] = cfg.pop(old)
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
    if isinstance(weights, (list, tuple)) and cfg["class_number"] is not None and len(weights) != cfg["class_number"]:
        raise ConfigError(f"class_weight has {len(weights)} values but class_number is {cfg['class_number']}")
    for key in ("val_fold", "start_fold"):
        if cfg[key] is not None and cfg[key] >= cfg["k_fold"]:
            raise ConfigError(f"{key}={cfg[key]} must be below k_fold={cfg['k_fold']}")
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
    if cfg["class_names"] and cfg["class_number"] is not None and len(cfg["class_names"]) != cfg["class_number"]:
        raise ConfigError(f"class_names lists {len(cfg['class_names'])} names but class_number is "
                          f"{cfg['class_number']}")


def parse_override(text: str):
    """Split ``key=value`` and parse the value as a Python literal, falling back to the raw string."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' is not of the form key=value (quote a value that has spaces: "
                          f"\"key=value with spaces\")")
    key, raw = text.split("=", 1)
    key = key.strip().lstrip("-")
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        value = raw
    return key, value


def _open_brackets(text: str) -> int:
    return sum(text.count(c) for c in "[({") - sum(text.count(c) for c in "])}")


def parse_overrides(items: Iterable[str]) -> Dict[str, object]:
    """``key=value`` items as a dict. A value the shell split at its spaces (``target_img_size=[64, 64]`` arrives
    as ``target_img_size=[64,`` and ``64]``) is an error that shows the whole override and how to quote it."""
    items: List[str] = list(items)
    parsed = {}
    for i, text in enumerate(items):
        if "=" in text and i + 1 < len(items) and _open_brackets(text.split("=", 1)[1]) > 0:
            _raise_split(items[i:])
        key, value = parse_override(text)
        parsed[key] = value
    return parsed


def _raise_split(items: List[str]) -> None:
    """``items`` start with a value whose brackets do not close: join the arguments the shell split it into."""
    joined = items[0]
    for part in items[1:]:
        if _open_brackets(joined) <= 0:
            break
        joined += " " + part
    compact = joined.replace(" ", "")
    try:
        ast.literal_eval(compact.split("=", 1)[1])
        alternative = f", or leave out the spaces: {compact}"
    except (ValueError, SyntaxError):
        alternative = ""
    raise ConfigError(f"the shell split the override {joined!r} at its spaces; quote it: \"{joined}\"{alternative}")


def read_config_file(path: str, chain: Tuple[str, ...] = ()) -> dict:
    """The ``cfg`` of a config file: the user's own Python (run, its ``cfg`` merged over its ``_base_`` files), or
    a JSON object of keys, such as the ``config.json`` every training run writes in its save_dir.

    ``_base_`` is a path relative to the file, or a list of them (later ones win); bases may have bases.
    """
    if not os.path.isfile(path):
        where = f" (the _base_ of {chain[-1]})" if chain else ""
        raise ConfigError(f"config file not found: {path}{where}")
    if path.lower().endswith(".json"):
        return clear_names(_read_json_config(path), path)
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
    return {**merged, **clear_names(cfg, path)}  # clear names first, so a child's k_fold overrides a base's k_flod


def _read_json_config(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as handle:
            cfg = json.load(handle)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(cfg, dict):
        raise ConfigError(f"{path} must hold a JSON object of config keys, as a run's config.json does")
    cfg.pop(files.PROBE_RECORD, None)  # what a budgeted run measured: a record, not a key to run with
    return _registered_hooks_only(cfg, path)


def _registered_hooks_only(cfg: dict, path: str) -> dict:
    """A run's config.json records a Hook instance of its config.py by class name; unless that name is registered,
    it is left out (evaluate, predict and export run no hooks), with a warning."""
    hooks = cfg.get("custom_hooks")
    if not isinstance(hooks, list):
        return cfg
    from easycls.engine.hooks import list_hooks  # start-up time (torch, the hook modules)
    known = set(list_hooks())
    kept = [item for item in hooks if (item.get("type") if isinstance(item, dict) else item) in known]
    if len(kept) < len(hooks):
        log.warning("%s: custom_hooks %s are not registered (a Hook instance is recorded by its class name); left "
                    "out. To train with them, use the config file that defines them", path,
                    [item for item in hooks if item not in kept])
    return {**cfg, "custom_hooks": kept}


def load_config(config: Union[str, "os.PathLike[str]", Mapping, None] = None,
                overrides: Union[Iterable[str], Mapping] = ()) -> dict:
    """The command line's config: like :func:`make_config`, but ``config=None`` reads ``config.py`` in the working
    folder when there is one, and ``overrides`` may be ``key=value`` strings (values parsed as Python literals)."""
    if config is None and os.path.isfile("config.py"):
        config = "config.py"
    return make_config(config, overrides if isinstance(overrides, Mapping) else parse_overrides(overrides))


Config = Union[str, "os.PathLike[str]", Mapping, None]


def given_values(config: Config = None, overrides: Optional[Mapping] = None) -> dict:
    """The keys a caller set and their values: ``config`` (a config file's path, a dict of keys, or None), then
    ``overrides``; no defaults, not yet validated (an unknown override key is refused at once)."""
    if isinstance(config, (str, os.PathLike)):
        given = read_config_file(os.fspath(config))
    elif isinstance(config, Mapping):
        given = clear_names(dict(config), "the config dict")
    elif config is None:
        given = {}
    else:
        raise ConfigError(f"config must be a config file's path, a dict or None; got {type(config).__name__}")
    for key, value in (overrides or {}).items():
        key = clear_name(key)
        if key not in SCHEMA:
            raise _unknown(key)
        given[key] = value
    return given


def make_config(config: Config = None, overrides: Optional[Mapping] = None) -> dict:
    """The validated config: defaults, then ``config`` (a config file's path, a dict of keys, or None for the
    defaults alone), then ``overrides``. Old key spellings (``k_flod``) are accepted in all of them. Raises
    :class:`ConfigError` with the same one-line messages as the command line."""
    return validate({**defaults(), **given_values(config, overrides)})

