"""Turn a validated config into data loaders, a model and a :class:`ModelRunner`; the CLI's building blocks."""
import logging
import os
from typing import List, Optional, Tuple

import torch
from sklearn.model_selection import StratifiedKFold

from .checkpoints import load_checkpoint, split_checkpoint
from .config import image_size
from .data import (EpochSampler, FileDataset, MemoryLoader, PrefetchLoader, Samples, StreamLoader, decode_all,
                   scan_labelled)
from .distributed import DistInfo
from .errors import ConfigError, DataError
from .models import ALIASES, create_model, load_pretrained, model_norm, resolve_name
from .runner import ModelRunner

log = logging.getLogger(__name__)


def select_device(cfg: dict, dist: Optional[DistInfo] = None) -> torch.device:
    """CUDA when available and not turned off by ``GPU_ID='cpu'``; under torchrun, the local rank's GPU."""
    if cfg["GPU_ID"].lower() == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    index = dist.local_rank if dist and dist.enabled else int(cfg["GPU_ID"] or 0)
    torch.cuda.set_device(index)
    return torch.device("cuda", index)


# ----------------------------------------------------------------------------- data
def _limit(samples: Samples, count: int, seed: int) -> Samples:
    if not count or count >= len(samples.paths):
        return samples
    order = torch.randperm(len(samples.paths), generator=torch.Generator().manual_seed(seed))[:count]
    return samples.subset(sorted(order.tolist()))


def train_val_samples(cfg: dict) -> Tuple[Samples, Samples]:
    """Scan train and val folders (or split a k-fold val from train); check ``class_number``."""
    train = scan_labelled(cfg["train_path"], cfg["class_names"] or None)
    if len(train.classes) != cfg["class_number"]:
        raise DataError(f"class_number is {cfg['class_number']} but {cfg['train_path']} has "
                        f"{len(train.classes)} class folders: {train.classes}")
    if cfg["val_path"]:
        val = scan_labelled(cfg["val_path"], train.classes)
    else:
        folds = StratifiedKFold(cfg["k_flod"], shuffle=True, random_state=cfg["random_seed"])
        train_idx, val_idx = list(folds.split(train.paths, train.labels))[cfg["val_fold"]]
        train, val = train.subset(train_idx), train.subset(val_idx)
        log.info("val_path is '': using fold %d of %d from train as val", cfg["val_fold"], cfg["k_flod"])
    items = cfg["try_to_train_items"]
    return _limit(train, items, cfg["random_seed"]), _limit(val, items, cfg["random_seed"])


def use_ram_cache(cfg: dict, n_images: int) -> bool:
    """Whether ``n_images`` decoded at the target size fit the ``cache_mb`` budget (or the cache is forced)."""
    if cfg["cache"] != "auto":
        return cfg["cache"] == "ram"
    height, width = image_size(cfg)
    return n_images * cfg["channels"] * height * width <= cfg["cache_mb"] * 2 ** 20


def make_loader(samples: Samples, cfg: dict, batch_size: int, train: bool, dist: DistInfo, ram: bool):
    """A memory loader over decoded images, or a streaming one; both yield the same batches."""
    size = image_size(cfg)
    workers = cfg["num_workers"]
    if ram:
        images, samples = decode_all(samples, cfg["channels"], size, workers)
    sampler = EpochSampler(len(samples.paths), shuffle=train, seed=cfg["random_seed"], rank=dist.rank,
                           world=dist.world, even=train)
    drop_last = train and len(sampler) > batch_size  # a last batch of 1 breaks BatchNorm
    if ram:
        return MemoryLoader(images, samples.labels, batch_size, sampler, drop_last)
    return StreamLoader(FileDataset(samples, cfg["channels"], size), batch_size, sampler, workers, drop_last)


def build_train_loaders(cfg: dict, dist: DistInfo):
    """Train and val loaders plus the class names, with the RAM cache when the data fits."""
    train, val = train_val_samples(cfg)
    ram = use_ram_cache(cfg, len(train.paths) + len(val.paths))
    log.info("data: %d train / %d val images, %d classes, %s", len(train.paths), len(val.paths),
             len(train.classes), "decoded once into memory" if ram else "streamed from disk")
    train_loader = make_loader(train, cfg, cfg["batch_size"], True, dist, ram)
    val_loader = make_loader(val, cfg, cfg["test_batch_size"], False, dist, ram)
    return train_loader, val_loader, train.classes


# ----------------------------------------------------------------------------- models
def build_model(cfg: dict, classes: List[str]):
    """A new model for ``classes`` (with pretrained weights when configured) and the metadata to save with it."""
    name = resolve_name(cfg["model_name"])
    model = create_model(name, len(classes), cfg["channels"], cfg["dropout"])
    if cfg["pretrained"]:
        load_pretrained(model, cfg["pretrained"], cfg["pretrained_key_map"])
    mean, std = model_norm(model, cfg["channels"])
    meta = {"model_name": name, "class_names": list(classes), "img_size": list(image_size(cfg)),
            "channels": cfg["channels"], "mean": cfg["mean"] or mean, "std": cfg["std"] or std}
    return model, meta


def model_from_checkpoint(path: str):
    """Rebuild the model saved at ``path`` (.pth or .safetensors + .json) and return it with its metadata."""
    weights, meta = split_checkpoint(load_checkpoint(path), path)
    model = create_model(meta["model_name"], len(meta["class_names"]), meta["channels"])
    model.load_state_dict(weights)
    return model, meta


def report_conflicts(cfg: dict, meta: dict) -> None:
    """Say which config values the checkpoint overrides (its own values always win)."""
    pairs = {"model_name": ("model_name", ALIASES.get(cfg["model_name"], cfg["model_name"])),
             "class_number": ("class_names", cfg["class_number"]),
             "target_img_size": ("img_size", list(image_size(cfg))), "channels": ("channels", cfg["channels"])}
    for key, (meta_key, value) in pairs.items():
        saved = len(meta[meta_key]) if key == "class_number" else meta[meta_key]
        if saved != value:
            log.warning("config %s=%r differs from the checkpoint's %r; using the checkpoint's", key, value, saved)


def checkpoint_path(cfg: dict) -> str:
    path = cfg["model_path"] or os.path.join(cfg["save_dir"], "best.pth")
    if not os.path.exists(path):
        raise ConfigError(f"model_path {path} does not exist; train first or set model_path=<checkpoint>")
    return path


def runner_for_inference(cfg: dict, dist: Optional[DistInfo] = None) -> ModelRunner:
    """A runner around the checkpoint at ``model_path``; its metadata, not the config, defines the model."""
    path = checkpoint_path(cfg)
    model, meta = model_from_checkpoint(path)
    report_conflicts(cfg, meta)
    log.info("loaded %s: %s, %d classes, %s px, %d channel(s)", path, meta["model_name"],
             len(meta["class_names"]), "x".join(map(str, meta["img_size"])), meta["channels"])
    return ModelRunner(model, meta, cfg, select_device(cfg, dist), dist)


def inference_loader(samples: Samples, runner: ModelRunner) -> PrefetchLoader:
    """A streaming loader at the checkpoint's size and channels, in file order; it decodes ahead on a GPU only."""
    dataset = FileDataset(samples, runner.meta["channels"], runner.meta["img_size"])
    ahead = 4 if runner.device.type == "cuda" else 0
    return PrefetchLoader(dataset, runner.cfg["test_batch_size"], runner.cfg["num_workers"], ahead)
