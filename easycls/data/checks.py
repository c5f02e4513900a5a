"""Checks of the training data made once at the start of a run, each a clear line instead of a silent surprise:
the path keys, the number of classes (``class_number=None`` counts them), classes a split lacks, and colour
images that ``channels=1`` turns gray."""
import logging
import os
from typing import Dict, List, Optional, Sequence

import numpy as np
import pandas as pd

from easycls.core.errors import ConfigError, DataError
from easycls.data.images import ImageReadError, decode_full, list_images
from easycls.data.multilabel import class_counts
from easycls.data.scan import Samples, class_folders

log = logging.getLogger(__name__)
COLOUR_SAMPLES = 8  # images looked at for colour: the first of up to this many classes (or labels-CSV rows)


def require_folder(cfg: dict, key: str) -> str:
    """``cfg[key]`` when it is a folder; else a :class:`DataError` naming the key and the value."""
    path = cfg[key]
    if os.path.isdir(path):
        return path
    what = "is a file" if os.path.isfile(path) else "does not exist"
    raise DataError(f"{key} {path} {what}; give a folder with one sub-folder of images per class")


def data_classes(cfg: dict) -> List[str]:
    """The class names the training data defines: ``class_names``, else the labels of ``label_path``
    (label_type='CSV') or the class folders of ``train_path``."""
    if cfg["class_names"]:
        return list(cfg["class_names"])
    if cfg["label_type"] == "CSV":
        table = pd.read_csv(cfg["label_path"], dtype=str, keep_default_na=False)
        if "label" not in table:
            raise DataError(f"label_path {cfg['label_path']} must start with the columns image_id,label; it has "
                            f"{list(table.columns)}")
        return sorted(set(table["label"]))
    return class_folders(require_folder(cfg, "train_path"))


def with_class_number(cfg: dict) -> dict:
    """``cfg`` with ``class_number`` filled in: None becomes the number of :func:`data_classes` (a number that was
    set is checked against the data when it is scanned). A ``class_weight`` list needs one value per class."""
    number = cfg["class_number"] if cfg["class_number"] is not None else len(data_classes(cfg))
    weights = cfg["class_weight"]
    if isinstance(weights, (list, tuple)) and len(weights) != number:
        raise ConfigError(f"class_weight has {len(weights)} values but the data has {number} classes; give one "
                          f"weight per class, or 'balanced'")
    cfg["class_number"] = number  # in place: the run's own config, so config.json records the number
    return cfg


def missing_classes(samples: Samples) -> List[str]:
    """The classes of ``samples`` that have no image in it (for multi-label samples: that no image carries)."""
    return [name for name, count in zip(samples.classes, class_counts(samples)) if count == 0]


def split_name(cfg: dict, split: str) -> str:
    """Where a split's images come from, in words: ``val_path ../photos/val``, ``the val fold of train_path``."""
    if split == "train":
        return f"train_path {cfg['train_path']}"
    if cfg["val_path"]:
        return f"val_path {cfg['val_path']}"
    return "the val rows of label_path" if cfg["label_type"] == "CSV" else "the val fold of train_path"


def warn_missing_classes(cfg: dict, splits: Dict[str, Samples]) -> Dict[str, List[str]]:
    """One warning line per split that lacks a class; return ``{split: [missing class names]}``."""
    missing = {split: missing_classes(samples) for split, samples in splits.items()}
    for split, names in missing.items():
        if names:
            log.warning("%s has no images of %s: %s", split_name(cfg, split), ", ".join(names),
                        "the model never learns them" if split == "train" else
                        "val accuracy, best.pth and early stopping never check them")
    return missing


def has_colour(path: str) -> bool:
    """Whether an image has colour: more than 1% of its pixels with channels 24+ levels apart (gray stored as RGB
    and a JPEG's chroma noise stay below); False for an unreadable file."""
    try:
        rgb = decode_full(path, 3, at_least=64).astype(np.int16)
    except ImageReadError:
        return False
    return float(((rgb.max(axis=2) - rgb.min(axis=2)) > 24).mean()) > 0.01


def _colour_candidates(cfg: dict) -> Sequence[str]:
    if cfg["label_type"] == "CSV":
        ids = pd.read_csv(cfg["label_path"], dtype=str, nrows=COLOUR_SAMPLES, keep_default_na=False)
        return [os.path.join(cfg["train_path"], i) for i in ids.get("image_id", [])]
    firsts = (list_images(os.path.join(cfg["train_path"], name))[0][:1]
              for name in class_folders(cfg["train_path"])[:COLOUR_SAMPLES])
    return [path for first in firsts for path in first]


def colour_example(cfg: dict) -> Optional[str]:
    """A colour training image when ``channels=1`` would turn it gray (None otherwise, or when the data cannot be
    read yet: its own errors come later, with the scan)."""
    if cfg["channels"] != 1:
        return None
    try:
        return next((path for path in _colour_candidates(cfg) if has_colour(path)), None)
    except (DataError, OSError, ValueError):
        return None


def warn_dropped_colour(cfg: dict) -> None:
    """Say once when ``channels=1`` is about to train a colour dataset in gray."""
    example = colour_example(cfg)
    if example:
        log.warning("the training images have colour (such as %s) and channels=1 trains on them in grayscale; "
                    "channels=3 keeps the colour", example)
