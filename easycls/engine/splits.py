"""The train and val images a config names (class folders, a fold of them, or a labels CSV) and their loaders:
the data half of the builder."""
import logging
import os
from typing import Sequence, Tuple

import numpy as np
import torch

from easycls.core import files
from easycls.core.device import uses_cuda
from easycls.core.distributed import DistInfo
from easycls.core.errors import ConfigError, DataError
from easycls.data.checks import require_folder, warn_missing_classes
from easycls.data.images import image_size
from easycls.data.loaders import EpochSampler, FileDataset, MemoryLoader, StreamLoader, decode_all
from easycls.data.multilabel import read_labels, sampling_weights, strata
from easycls.data.scan import Samples, scan_labelled
from easycls.engine import kfold
from easycls.engine.kfold import fold_parts

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- data
def _limit(samples: Samples, count: int, seed: int) -> Samples:
    if not count or count >= len(samples.paths):
        return samples
    order = torch.randperm(len(samples.paths), generator=torch.Generator().manual_seed(seed))[:count]
    return samples.subset(sorted(order.tolist()))


def _checked(samples: Samples, cfg: dict, what: str) -> Samples:
    """Check ``class_number``; attach ``sample_weights`` to the whole set, before any split (subsets keep them)."""
    if cfg["class_number"] is not None and len(samples.classes) != cfg["class_number"]:
        raise DataError(f"class_number is {cfg['class_number']} but {cfg['train_path']} has "
                        f"{len(samples.classes)} {what}: {samples.classes}")
    if cfg["sample_weights"]:
        samples.weights = sampling_weights(samples, cfg["sample_weights"], cfg["train_path"])
    return samples


def csv_split(cfg: dict) -> Tuple[Samples, Samples]:
    """label_type='CSV': labels from ``label_path`` (single- or multi-label); val from its split column, else
    ``val_path`` (class folders, single-label), else a seeded ``val_fraction`` of it stratified on the labels (the
    rarest label of each image for multi-label), or with ``val_fraction=0`` the other folds than ``val_fold`` of
    ``k_fold`` (an inner share of them is val: fold ``val_fold`` itself is held out for ``oof.csv``);
    ``save_dir/split.csv`` from an earlier run wins on resume."""
    saved = files.out(cfg, files.SPLIT)
    source = saved if cfg["resume"] and os.path.isfile(saved) else cfg["label_path"]
    samples, split = read_labels(source, cfg["train_path"], cfg["class_names"] or None, cfg["multi_label"])
    samples = _checked(samples, cfg, "labels in " + source)
    if split is None and cfg["val_path"]:
        if samples.multi_label:
            raise ConfigError("val_path holds class folders, one label per image; for multi-label data give the val "
                              "rows in label_path (a split column) or set val_path='' (a val_fraction share)")
        return samples, scan_labelled(cfg["val_path"], samples.classes)
    if split is None and cfg["val_fraction"] == 0:  # fold val_fold is held out; an inner share chooses
        train, val, _ = fold_parts(samples, {**cfg, "val_fraction": kfold.CSV_INNER_FRACTION})
        return train, val
    if split is None:
        is_val = holdout(strata(samples), cfg["val_fraction"], cfg["random_seed"])
    else:
        is_val = np.asarray(split) == "val"
    return samples.subset(np.flatnonzero(~is_val).tolist()), samples.subset(np.flatnonzero(is_val).tolist())


def holdout(labels: Sequence[int], fraction: float, seed: int) -> np.ndarray:
    """A seeded ``fraction`` of the images stratified on ``labels`` (scikit-learn's ``train_test_split``), as a
    boolean mask."""
    from sklearn.model_selection import train_test_split
    _, val = train_test_split(np.arange(len(labels)), test_size=fraction, random_state=seed, stratify=labels)
    mask = np.zeros(len(labels), dtype=bool)
    mask[val] = True
    return mask


def train_val_samples(cfg: dict) -> Tuple[Samples, Samples]:
    """Scan train and val folders (or split a k-fold val from train), or read a labels CSV; check
    ``class_number``."""
    if cfg["label_type"] == "CSV":
        train, val = csv_split(cfg)
    else:
        train, val = folder_split(cfg)
    items = cfg["try_to_train_items"]
    return _limit(train, items, cfg["random_seed"]), _limit(val, items, cfg["random_seed"])


def folder_split(cfg: dict) -> Tuple[Samples, Samples]:
    """Class folders: ``val_path``, or fold ``val_fold`` of ``train_path``: the other folds, split into train and
    a val that chooses the checkpoint (:func:`kfold.fold_parts`); the fold itself is held out for ``oof.csv``."""
    train = _checked(scan_labelled(require_folder(cfg, "train_path"), cfg["class_names"] or None), cfg, "class folders")
    if cfg["val_path"]:
        return train, scan_labelled(require_folder(cfg, "val_path"), train.classes)
    train, val, held_out = fold_parts(train, cfg)
    log.info("val_path is '': fold %d of %d (%d images) is held out for oof.csv; %d of the other %d images "
             "(val_fraction %g) choose the checkpoint and the temperature", cfg["val_fold"], cfg["k_fold"],
             len(held_out.paths), len(val.paths), len(train.paths) + len(val.paths), cfg["val_fraction"])
    return train, val


def use_ram_cache(cfg: dict, n_images: int) -> bool:
    """Whether ``n_images`` decoded at the target size fit the ``cache_mb`` budget (or the cache is forced)."""
    if cfg["cache"] != "auto":
        return cfg["cache"] == "ram"
    height, width = image_size(cfg)
    return n_images * cfg["channels"] * height * width <= cfg["cache_mb"] * 2 ** 20


def make_loader(samples: Samples, cfg: dict, batch_size: int, train: bool, dist: DistInfo, ram: bool,
                pin_memory: bool = False, progress: bool = False):
    """A memory loader over decoded images, or a streaming one (in pinned memory for a CUDA run, so that copies to
    the GPU overlap the step); both yield the same batches. Training drops the last partial batch (a different one
    each epoch, as the order is reshuffled)."""
    size = image_size(cfg)
    workers = cfg["num_workers"]
    if ram:
        images, samples = decode_all(samples, cfg["channels"], size, workers, progress)
    sampler = EpochSampler(len(samples.paths), shuffle=train, seed=cfg["random_seed"], rank=dist.rank,
                           world=dist.world, even=train, weights=samples.weights if train else None)
    drop_last = train and len(sampler) > batch_size  # a last batch of 1 breaks BatchNorm
    if ram:
        return MemoryLoader(images, samples, batch_size, sampler, drop_last)
    return StreamLoader(FileDataset(samples, cfg["channels"], size), batch_size, sampler, workers, drop_last,
                        pin_memory)


def build_train_loaders(cfg: dict, dist: DistInfo, progress: bool = False):
    """Train and val loaders plus the class names, with the RAM cache when the data fits; ``progress`` shows the
    decoding. Logs the counts of the images used and warns about a split that lacks a class."""
    train, val = train_val_samples(cfg)
    ram = use_ram_cache(cfg, len(train.paths) + len(val.paths))
    show, pin = progress and dist.is_main, uses_cuda(cfg)
    train_loader = make_loader(train, cfg, cfg["batch_size"], True, dist, ram, pin, show)
    val_loader = make_loader(val, cfg, cfg["test_batch_size"], False, dist, ram, pin, show)
    kept = [len(loader.samples.paths) for loader in (train_loader, val_loader)]
    skipped = len(train.paths) + len(val.paths) - sum(kept)
    how = "decoded once into memory" + (f", {skipped} unreadable skipped" if skipped else "") if ram else \
        "streamed from disk (an unreadable file is skipped when met)"
    log.info("data: %d train / %d val images, %d classes, %s", *kept, len(train.classes), how)
    if dist.is_main:
        warn_missing_classes(cfg, {"train": train_loader.samples, "val": val_loader.samples})
    return train_loader, val_loader, train.classes
