"""Scanning class folders and unlabelled trees into :class:`Samples`, and reporting files that cannot be
read."""
import logging
import os
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

from easycls.core.errors import DataError
from easycls.data.images import is_hidden, is_image_name, list_images, skip_reason

log = logging.getLogger(__name__)



@dataclass
class Samples:
    """Image paths with integer labels (``-1`` when unlabelled), the class names they index, and optional sampling
    weights (``sample_weights``), which subsets keep aligned. With ``multi_label`` each label is a tuple of 0/1,
    one per class."""

    paths: List[str]
    labels: list
    classes: List[str]
    weights: Optional[List[float]] = None
    multi_label: bool = False

    def subset(self, keep: Sequence[int]) -> "Samples":
        weights = None if self.weights is None else [self.weights[i] for i in keep]
        return Samples([self.paths[i] for i in keep], [self.labels[i] for i in keep], self.classes, weights,
                       self.multi_label)


def image_ids(paths, root: str):
    """Paths relative to ``root`` with forward slashes (the paths come from walking ``root``); when ``root`` is one
    image file, its name."""
    prefix = os.path.join(root, "")
    return [os.path.basename(p) if p == root else
            (p[len(prefix):] if p.startswith(prefix) else os.path.relpath(p, root)).replace(os.sep, "/")
            for p in paths]


def class_folders(root: str) -> List[str]:
    """Sorted class sub-folders of ``root``; an image lying at the top level is an error."""
    if not os.path.isdir(root):
        raise DataError(f"dataset folder not found: {root}")
    entries = sorted(os.listdir(root))
    stray = [e for e in entries if is_image_name(e) and os.path.isfile(os.path.join(root, e))]
    if stray:
        raise DataError(f"{root} has images at its top level ({', '.join(stray[:3])}); "
                        f"put every image in a sub-folder named after its class")
    folders = [e for e in entries if os.path.isdir(os.path.join(root, e)) and not is_hidden(e)]
    if not folders:
        raise DataError(f"{root} has no class sub-folders")
    return folders


def scan_labelled(root: str, classes: Optional[List[str]] = None) -> Samples:
    """Scan a class-folder dataset. With ``classes`` given, every folder must be one of them."""
    folders = class_folders(root)
    classes = list(classes) if classes else folders
    unknown = [f for f in folders if f not in classes]
    if unknown:
        raise DataError(f"{root} has class folder(s) {unknown} that the model does not know; "
                        f"known classes: {classes}")
    paths, labels, skipped = [], [], []
    for folder in folders:
        images, others = list_images(os.path.join(root, folder))
        if not images:
            raise DataError(f"class folder {os.path.join(root, folder)} has no images "
                            f"(accepted: png, jpg, jpeg, bmp, webp, tif)")
        paths += images
        labels += [classes.index(folder)] * len(images)
        skipped += others
    report_skipped(skipped)
    return Samples(paths, labels, classes)


def scan_unlabelled(root: str) -> Tuple[Samples, List[Tuple[str, str]]]:
    """Every image under ``root`` (recursively, in a stable order) and the ``(path, reason)`` of skipped files;
    ``root`` may also be one image file."""
    if os.path.isfile(root):
        reason = skip_reason(os.path.basename(root))
        if reason:
            raise DataError(f"{root} is a file but not an image: {reason}")
        return Samples([root], [-1], []), []
    if not os.path.isdir(root):
        raise DataError(f"folder not found: {root}")
    images, skipped = list_images(root)
    report_skipped(skipped)
    return Samples(images, [-1] * len(images), []), skipped


def report_unreadable(path: str, reason: str) -> None:
    """The one way a file left out is reported, whoever found it: ``skipped <path>: <reason>``."""
    log.warning("skipped %s: %s", path, reason)


def report_skipped(skipped: List[Tuple[str, str]]) -> None:
    """Name every skipped file with its reason, then give the count."""
    for path, reason in skipped:
        report_unreadable(path, reason)
    if skipped:
        log.warning("skipped %d file(s) in all", len(skipped))


class FailureLog:
    """Reports each file of ``loader`` that failed to decode once, however many epochs meet it again."""

    def __init__(self, loader):
        self.loader, self.seen = loader, set()

    def __call__(self, failures: List[Tuple[int, str]]) -> None:
        for index, reason in failures:
            if index not in self.seen:
                self.seen.add(index)
                report_unreadable(self.loader.dataset.samples.paths[index], reason)


def loader_labels(loader) -> List[int]:
    """The labels of every image a training or validation loader serves (in memory or streamed)."""
    return [int(label) for label in loader.samples.labels]
