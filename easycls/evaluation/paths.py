"""The data paths evaluate, predict and export read, and the errors that name them.

A later command often runs without the paths its model was trained with (they were given on the training command
line, and the config file still has the defaults). Each error here names the key, the value tried and, when the
model's own run config says otherwise, that value and the way to reuse it: ``--config <save_dir>/config.json``.
"""
import json
import os
from typing import Dict, Sequence, Tuple

from easycls.core import files
from easycls.core.errors import DataError
from easycls.evaluation.predictor import Predictor, model_paths


def trained_config(cfg: dict, model: Predictor) -> dict:
    """The config the model was trained with: its checkpoint's, else the ``config.json`` beside the model file
    (an exported model or ``best.safetensors`` in its save_dir); {} when neither exists."""
    if model.run_config:
        return model.run_config
    beside = os.path.join(os.path.dirname(model_paths(cfg)[0]), files.CONFIG_JSON)
    if not os.path.isfile(beside):
        return {}
    try:
        with open(beside, encoding="utf-8") as handle:
            saved = json.load(handle)
    except (OSError, ValueError):  # only a hint for an error message: never a new error
        return {}
    return saved if isinstance(saved, dict) else {}


def problem(key: str, value: str) -> str:
    """What is wrong with a path key's value, or '' when it names an existing file or folder."""
    if not value:
        return f"{key} is ''"
    if not os.path.exists(value):
        return f"{key} {value} does not exist"
    return ""


def path_error(problems: Sequence[Tuple[str, str]], cfg: dict, run: Dict, lead: str = "") -> DataError:
    """One line: ``lead``, each ``(key, what is wrong)``, then the model's own values of those keys where they
    differ from the config's, with the two ways to use them: ``--config <its config.json>`` or ``key=...``."""
    text = lead + "; ".join(what for _, what in problems)
    theirs = [(key, run[key]) for key, _ in problems if run.get(key) and run[key] != cfg[key]]
    keys = [key for key, _ in problems]
    if theirs:
        saved = os.path.join(run.get("save_dir") or cfg["save_dir"], files.CONFIG_JSON)
        way = f"--config {saved} or " if os.path.isfile(saved) else ""
        text += ("; this model was trained with " + ", ".join(f"{key}={value}" for key, value in theirs)
                 + f": pass {way}{theirs[0][0]}=...")
    else:
        text += f": set {keys[0]}=..."
    return DataError(text)


def require(cfg: dict, key: str, run: Dict) -> str:
    """``cfg[key]`` when it names an existing file or folder; else raise :func:`path_error` for it."""
    what = problem(key, cfg[key])
    if what:
        raise path_error([(key, what)], cfg, run)
    return cfg[key]
