"""Config defaults, a typed schema, validation and ``key=value`` overrides.

A config is a plain dict. ``load_config`` reads ``cfg`` from a Python file (the user's ``config.py``), fills in
defaults, applies command-line overrides parsed as Python literals, and validates every key before anything else
happens, so a typo costs one clear line instead of a crashed run.
"""
import ast
import difflib
import json
import os
import re
import runpy
from dataclasses import dataclass
from typing import Callable, Dict, Iterable, Optional, Tuple

from .errors import ConfigError, SpecError


@dataclass(frozen=True)
class Key:
    """A config key: its default, a predicate on values, and the allowed values in words."""

    default: object
    ok: Callable[[object], bool]
    allowed: str


def _is(*types):
    return lambda v: isinstance(v, types) and not (bool not in types and isinstance(v, bool))


def _num(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _choice(*values):
    return lambda v: v in values


def _size(v):
    if isinstance(v, int) and not isinstance(v, bool):
        return v > 0
    return isinstance(v, (list, tuple)) and len(v) == 2 and all(isinstance(x, int) and x > 0 for x in v)


def _floats_or_none(v):
    return v is None or (isinstance(v, (list, tuple)) and len(v) > 0 and all(_num(x) for x in v))


def _str_list(v):
    return isinstance(v, (list, tuple)) and all(isinstance(x, str) for x in v)


def _gpu_id(v):
    """'0', '1', ... or 'cpu' ('' is '0'); a list such as '0,1' passes here so that preflight can point to
    torchrun."""
    return isinstance(v, str) and re.fullmatch(r"\s*(cpu|\d+(\s*,\s*\d+)*)?\s*", v, re.IGNORECASE) is not None


def _int_ge(low):
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= low


def _float_in(low, high, high_open=True):
    return lambda v: _num(v) and low <= v and (v < high if high_open else v <= high)


def _spec(kind):
    def check(v):
        from . import losses, optim, schedulers  # late import: the registries import this module's errors
        registry = {"loss": losses.LOSSES, "optimizer": optim.OPTIMIZERS, "scheduler": schedulers.SCHEDULERS}[kind]
        try:
            registry.parse(v)  # raises SpecError with the valid names and an example
        except SpecError:
            if not (kind == "optimizer" and isinstance(v, str) and optim.is_timm_optimizer(v)):  # imports timm
                raise
        return True
    return check


def _hooks(v):
    from .hooks import check_custom_hooks  # late import: hooks import this module
    if not isinstance(v, (list, tuple)):
        return False
    check_custom_hooks(v)  # raises ConfigError naming the registered hooks
    return True


# The seed's short names -> timm names.
MODEL_ALIASES = {
    "mobilenetv3": "mobilenetv3_large_100",
    "mobilenetv3_small": "mobilenetv3_small_100",
    "mobilenetv2": "mobilenetv2_100",
    "shufflenetv2": "tv:shufflenet_v2_x1_0",
    "se_resnext50_32x4d": "seresnext50_32x4d",
    "xception": "legacy_xception",
    **{f"efficientnet-b{i}": f"efficientnet_b{i}" for i in range(8)},
    **{f"adv-efficientnet-b{i}": f"tf_efficientnet_b{i}.ap_in1k" for i in range(9)},
}

BOOL = "True or False"
MONITORS = {"val_acc": "max", "val_f1": "max", "val_loss": "min"}

SCHEMA: Dict[str, Key] = {
    # global
    "model_name": Key("resnet10t", _is(str), "a timm model name, 'tv:<torchvision name>' or an alias"),
    "GPU_ID": Key("0", _gpu_id, "a CUDA device index such as '0' (or 0), or 'cpu'"),
    "class_number": Key(10, _int_ge(2), "an integer >= 2"),
    "class_names": Key([], _str_list, "a list of class folder names, or [] to use every folder"),
    "random_seed": Key(42, _int_ge(0), "an integer >= 0"),
    "cfg_verbose": Key(True, _is(bool), BOOL),
    "num_workers": Key(2, _int_ge(0), "an integer >= 0"),
    # data
    "train_path": Key("data/digits/train", _is(str), "a folder with one sub-folder per class"),
    "val_path": Key("data/digits/val", _is(str), "a folder with one sub-folder per class, or '' to use k_flod"),
    "test_path": Key("data/digits/test", _is(str), "a folder of images (sub-folders allowed)"),
    "eval_path": Key("", _is(str), "a labelled class-folder dataset, or '' to use test_path"),
    "k_flod": Key(5, _int_ge(2), "an integer >= 2 (folds used when val_path is ''; k_fold is accepted too)"),
    "val_fold": Key(None, lambda v: v is None or _int_ge(0)(v),
                    "None (train every fold from start_fold) or an integer in [0, k_flod) (that fold only)"),
    "start_fold": Key(0, _int_ge(0), "an integer in [0, k_flod): the first fold to train when val_path is ''"),
    "target_img_size": Key([32, 32], _size, "[height, width] or one integer, in pixels"),
    "channels": Key(1, _choice(1, 3), "1 (grayscale) or 3 (RGB)"),
    "mean": Key(None, _floats_or_none, "None (from the model) or a list of floats, one per channel"),
    "std": Key(None, _floats_or_none, "None (from the model) or a list of floats, one per channel"),
    "augment": Key("light", _choice("none", "shift", "light", "strong", "randaugment", "trivialaugment"),
                   "'none', 'shift', 'light', 'strong', 'randaugment' or 'trivialaugment'"),
    "random_erasing": Key(0.0, _float_in(0, 1, high_open=False),
                          "a float in [0, 1]: the chance each training image gets a random rectangle erased"),
    "hflip": Key(False, _is(bool), BOOL),
    "show_data": Key(False, _is(bool), BOOL + " (save_dir/data_preview.png: the first training batch as trained on)"),
    "mixup": Key(False, lambda v: isinstance(v, bool) or (_num(v) and v > 0),
                 "False, True (alpha 0.8) or an alpha > 0"),
    "cutmix": Key(False, lambda v: isinstance(v, bool) or (_num(v) and v > 0),
                  "False, True (alpha 1.0) or an alpha > 0"),
    "mixup_prob": Key(1.0, _float_in(0, 1, high_open=False), "a float in [0, 1]: the share of batches mixed"),
    "mixup_switch_prob": Key(0.5, _float_in(0, 1, high_open=False),
                             "a float in [0, 1]: with both on, the chance a batch uses cutmix instead of mixup"),
    "try_to_train_items": Key(0, _int_ge(0), "0 (all images) or a positive number of images"),
    "cache": Key("auto", _choice("auto", "ram", "none"), "'auto', 'ram' or 'none'"),
    "cache_mb": Key(4096, _int_ge(1), "a positive number of megabytes"),
    "audit": Key(False, _is(bool), BOOL),
    "label_type": Key("DIR", _choice("DIR", "CSV"), "'DIR' (one sub-folder per class) or 'CSV' (label_path)"),
    "label_path": Key("", _is(str), "'' or a CSV file of image_id,label[,split] (read when label_type is 'CSV')"),
    "val_fraction": Key(0.1, _float_in(0, 1), "a float in (0, 1): the share held out as val from a labels CSV "
                                              "without a split column, when val_path is ''"),
    # model
    "pretrained": Key("", lambda v: isinstance(v, (bool, str)),
                      "'' (none), True (the model's hub weights), 'hf-hub:org/name', a torchvision weights name such "
                      "as 'IMAGENET1K_V1' (tv: models) or a path to a .pth, .pt or .safetensors file"),
    "pretrained_key_map": Key({}, _is(dict), "a dict of {regex: replacement} applied to pretrained keys"),
    "dropout": Key(0.0, _float_in(0, 1), "a float in [0, 1)"),
    "freeze_nonlinear_epoch": Key(0, _int_ge(0), "an integer >= 0"),
    "sync_bn": Key(False, _is(bool), BOOL),
    # training
    "learning_rate": Key(0.002, lambda v: _num(v) and v > 0, "a number > 0"),
    "batch_size": Key(64, _int_ge(1), "an integer >= 1"),
    "epochs": Key(30, _int_ge(1), "an integer >= 1"),
    "optimizer": Key("AdamW", _spec("optimizer"), "an optimizer spec"),
    "weight_decay": Key(0.01, lambda v: _num(v) and v >= 0, "a number >= 0"),
    "scheduler": Key("cosine", _spec("scheduler"), "a scheduler spec"),
    "warmup_epoch": Key(0, _int_ge(0), "an integer >= 0"),
    "loss": Key("CE", _spec("loss"), "a loss spec"),
    "use_distill": Key(0, lambda v: v in (0, 1), "0 or 1 (True or False): distil from teacher_path"),
    "teacher_path": Key("", _is(str), "'' or a checkpoint this toolkit wrote, same classes, any architecture"),
    "distill_alpha": Key(0.5, _float_in(0, 1, high_open=False), "a float in [0, 1]: the weight of the teacher's term"),
    "distill_temperature": Key(4.0, lambda v: _num(v) and v > 0, "a number > 0: the softening temperature"),
    "label_smooth": Key(0.0, _float_in(0, 1), "a float in [0, 1)"),
    "class_weight": Key(None, lambda v: v == "balanced" or _floats_or_none(v),
                        "None, 'balanced' (n / (classes x count)) or a list of class_number floats"),
    "sample_weights": Key(None, lambda v: v is None or isinstance(v, str),
                          "None, 'balanced' (each class drawn equally often) or a CSV of image_id,weight"),
    "clip_gradient": Key(0, lambda v: _num(v) and v >= 0, "0 (off) or a max gradient norm > 0"),
    "accumulate_steps": Key(1, _int_ge(1), "an integer >= 1 (batches per optimizer step)"),
    "ema": Key(False, _is(bool), BOOL),
    "ema_decay": Key(0.9998, lambda v: _num(v) and 0 < v < 1, "a float in (0, 1), such as 0.9998"),
    "early_stop_patient": Key(7, _int_ge(0), "0 (off) or a number of epochs"),
    "monitor": Key("val_acc", _choice(*MONITORS), "one of " + ", ".join(MONITORS)),
    "metrics": Key(["acc"], lambda v: _str_list(v) and set(v) <= {"acc", "F1"}, "a list from ['acc', 'F1']"),
    "amp": Key("auto", _choice("auto", "fp16", "bf16", "off"), "'auto', 'fp16', 'bf16' or 'off'"),
    "channels_last": Key(True, _is(bool), BOOL),
    "compile": Key(False, _is(bool), BOOL),
    "custom_hooks": Key([], _hooks, "a list of registered hook names (easycls.list_hooks()), "
                                    "dict(type=name, **kwargs) or Hook instances"),
    "tensorboard": Key(False, _is(bool), BOOL + ' (needs pip install -e ".[tensorboard]")'),
    "lr_find": Key(False, _is(bool), BOOL + " (True: a learning-rate range test instead of training)"),
    "resume": Key(False, lambda v: isinstance(v, (bool, str)), "False, True (save_dir/last.pth) or a path"),
    # outputs, evaluation and prediction
    "save_dir": Key("output/", _is(str), "a folder path"),
    "save_best_only": Key(True, _is(bool), BOOL),
    "save_one_only": Key(True, _is(bool), BOOL),
    "model_path": Key("", lambda v: isinstance(v, str) or (isinstance(v, list) and len(v) > 0 and _str_list(v)),
                      "'' (save_dir/best.pth), a checkpoint (.pth, .safetensors), or for evaluate and predict an "
                      "exported .onnx or TorchScript .pt, or a list of them (an ensemble)"),
    "export_format": Key("onnx", _choice("onnx", "torchscript", "all"), "'onnx', 'torchscript' or 'all'"),
    "test_batch_size": Key(256, _int_ge(1), "an integer >= 1"),
    "TTA": Key(False, _is(bool), BOOL),
    "show_heatmap": Key(False, _is(bool),
                        BOOL + ' (Grad-CAM overlays in save_dir/heatmaps; pip install -e ".[gradcam]")'),
    "heatmap_max": Key(32, _int_ge(1), "an integer >= 1: misclassified images (evaluate) or first images (predict)"),
    "heatmap_layer": Key("", _is(str), "'' (the last convolutional stage) or a module name such as 'layer3'"),
    "merge": Key(False, _is(bool), BOOL + " (True: evaluate and predict with every save_dir/fold*/best.pth)"),
    "calibrate": Key(True, _is(bool), BOOL + " (fit a temperature on val; evaluate and predict apply it)"),
    "reject_threshold": Key(0.0, _float_in(0, 1), "0 (off) or a float in (0, 1): a lower top probability is "
                                                  "marked 'rejected'"),
    "save_probs": Key(False, _is(bool), BOOL),
    "cm_normalize": Key(False, _is(bool), BOOL),
}

# Other spellings users write for a seed key.
KEY_SPELLINGS = {"k_fold": "k_flod"}


def defaults() -> dict:
    """A fresh dict of every key's default value."""
    return {k: (list(v.default) if isinstance(v.default, list) else v.default) for k, v in SCHEMA.items()}


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
    if cfg["label_type"] == "CSV" and not os.path.isfile(cfg["label_path"]):
        raise ConfigError(f"label_type='CSV' needs label_path, a CSV of image_id,label[,split]; "
                          f"not found: {cfg['label_path']!r}")
    if cfg["tensorboard"]:
        from .hooks import require_tensorboard
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


def plain(cfg: dict) -> dict:
    """``cfg`` as plain JSON values (a Hook instance becomes its class name), safe for checkpoints and JSON."""
    return json.loads(json.dumps(cfg, default=lambda obj: type(obj).__name__))


def load_config(path: Optional[str] = None, overrides: Iterable[str] = ()) -> dict:
    """Defaults, then the config file (``config.py`` in the working folder if present), then overrides."""
    cfg = defaults()
    if path is None and os.path.isfile("config.py"):
        path = "config.py"
    if path is not None:
        cfg.update(_spelled(read_config_file(path)))
    for item in overrides:
        key, value = parse_override(item)
        key = KEY_SPELLINGS.get(key, key)
        if key not in SCHEMA:
            raise _unknown(key)
        cfg[key] = value
    return validate(cfg)


def _spelled(cfg: dict) -> dict:
    """The seed's key names for the keys that have a second spelling (``k_fold`` is ``k_flod``)."""
    return {KEY_SPELLINGS.get(k, k): v for k, v in cfg.items()}


def image_size(cfg: dict) -> tuple:
    """``target_img_size`` as an ``(height, width)`` tuple."""
    size = cfg["target_img_size"]
    return (size, size) if isinstance(size, int) else tuple(size)
