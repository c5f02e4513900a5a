"""Multi-label data: which form a labels CSV has, the label matrix, stratification keys and sampling weights.

A multi-label sample's label is a tuple of 0/1, one per class (:class:`~easycls.data.scan.Samples` with
``multi_label=True``); single-label samples work with every function here as the one-hot case.
"""
import logging
from typing import List, Optional, Sequence

import numpy as np
import pandas as pd

from easycls.core.errors import ConfigError
from easycls.data.labels import read_label_csv, read_multilabel_csv, sample_weights
from easycls.data.scan import Samples

log = logging.getLogger(__name__)
SEPARATOR = "|"


def csv_form(csv_path: str) -> str:
    """How a labels CSV gives its labels: ``'names'`` (a ``labels`` column, or a ``label`` column with a '|' in some
    row), ``'one-hot'`` (a 0/1 column per class after image_id) or ``'single'`` (a ``label`` column, one name a row)."""
    columns = list(pd.read_csv(csv_path, nrows=0).columns)
    second = columns[1] if len(columns) > 1 else ""
    if second == "labels":
        return "names"
    if second != "label":
        return "one-hot" if columns[:1] == ["image_id"] and len(columns) > 1 else "single"
    label = pd.read_csv(csv_path, usecols=["label"], dtype=str, keep_default_na=False)["label"]
    return "names" if label.str.contains(SEPARATOR, regex=False).any() else "single"


def read_labels(csv_path: str, root: str, classes: Optional[List[str]] = None, multi_label: Optional[bool] = None,
                quiet: bool = False):
    """Samples and split column from a labels CSV, single- or multi-label as the file's form says (``multi_label``
    None) or as ``multi_label`` forces; unless ``quiet``, one log line states which and why."""
    form = csv_form(csv_path)
    if multi_label is False and form != "single":
        raise ConfigError(f"{csv_path} has several labels per image ({form} form), read here as one label per image "
                          f"(multi_label=False, or a single-label model); set multi_label=None to read them")
    multi = form != "single" or bool(multi_label)
    samples, split = (read_multilabel_csv if multi else read_label_csv)(csv_path, root, classes)
    if not quiet and multi:
        counts = label_matrix(samples).sum(axis=1)
        why = "multi_label=True" if form == "single" else f"{form} form"
        log.info("labels: multi-label (%s) from %s: %d images, %d classes, %.2f labels per image, %d with none",
                 why, csv_path, len(counts), len(samples.classes), counts.mean() if len(counts) else 0.0,
                 int((counts == 0).sum()))
    return samples, split


def label_matrix(samples: Samples) -> np.ndarray:
    """``(images, classes)`` of 0/1: the multi-hot labels, or the one-hot form of single labels."""
    if samples.multi_label:
        return np.asarray(samples.labels, dtype=np.int64).reshape(len(samples.labels), len(samples.classes))
    return np.eye(len(samples.classes), dtype=np.int64)[np.asarray(samples.labels, dtype=np.int64)]


def class_counts(samples: Samples) -> List[int]:
    """Images carrying each class."""
    return label_matrix(samples).sum(axis=0).tolist()


def joined(row: Sequence, classes: Sequence[str]) -> str:
    """The names of the classes set in a 0/1 ``row``, joined by '|' ('' for none)."""
    return SEPARATOR.join(name for name, on in zip(classes, row) if on)


def strata(samples: Samples, smallest: int = 2) -> np.ndarray:
    """A key per image to stratify splits and folds on: its class for single labels; for multi-label its rarest
    label (or 'none'), so every rare label is spread over the parts. Keys held by fewer than ``smallest`` images
    are pooled, and a pool still that small joins the commonest key."""
    if not samples.multi_label:
        return np.asarray(samples.labels)
    matrix = label_matrix(samples)
    counts = matrix.sum(axis=0)
    rarity = np.where(matrix > 0, counts[None, :], np.iinfo(np.int64).max)
    keys = np.where(matrix.any(axis=1), rarity.argmin(axis=1), -1)
    values, sizes = np.unique(keys, return_counts=True)
    small = np.isin(keys, values[sizes < smallest])
    keys[small] = -2
    if 0 < small.sum() < smallest:
        values, sizes = np.unique(keys, return_counts=True)
        keys[small] = values[sizes.argmax()]
    return keys


def balanced_weights(samples: Samples) -> List[float]:
    """Per image, 1 / the count of its rarest label (of the images with none, for an image without labels), so
    that rare labels are drawn about as often as common ones."""
    matrix = label_matrix(samples)
    counts = matrix.sum(axis=0)
    rare = np.where(matrix > 0, counts[None, :], np.iinfo(np.int64).max).min(axis=1)
    rare = np.where(matrix.any(axis=1), rare, max(int((~matrix.any(axis=1)).sum()), 1))
    return (1.0 / rare).tolist()


def sampling_weights(samples: Samples, spec, root: str) -> List[float]:
    """``sample_weights`` for either kind: ``'balanced'`` by the rarest label for multi-label samples."""
    if samples.multi_label and spec == "balanced":
        return balanced_weights(samples)
    return sample_weights(samples, spec, root)


def positive_weights(labels: Sequence[Sequence[int]]) -> List[float]:
    """``class_weight='balanced'`` for multi-label: per class, negatives / positives among the 0/1 ``labels`` (BCE's
    ``pos_weight``), so a rare label's few positives weigh as much as its many negatives; 1 for a class that is
    always or never present (a weight of 0 or infinity would stop it learning)."""
    matrix = np.asarray(labels, dtype=np.int64)
    positives = matrix.sum(axis=0)
    negatives = len(matrix) - positives
    both = (positives > 0) & (negatives > 0)
    return np.where(both, negatives / np.maximum(positives, 1), 1.0).tolist()
