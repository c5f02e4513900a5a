"""Turn a validated config into the parts of a training run, in one place: data loaders, model, optimizer,
scheduler, loss, preprocessing and hooks, handed to a :class:`ModelRunner`. (evaluate and predict load a model
through :func:`easycls.evaluation.predictor.load_predictor`, which builds none of these.)
"""
import logging
import os
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
from sklearn.model_selection import StratifiedKFold

from easycls.core import files
from easycls.core.checkpoints import ModelMeta
from easycls.core.device import check_gpu_id, select_device
from easycls.core.distributed import DistInfo
from easycls.core.errors import ConfigError, DataError
from easycls.data.augment import build_augment, build_erasing
from easycls.data.checks import require_folder, warn_missing_classes, with_class_number
from easycls.data.images import image_size
from easycls.data.labels import read_label_csv, sample_weights
from easycls.data.loaders import EpochSampler, FileDataset, MemoryLoader, Preprocessor, StreamLoader, decode_all
from easycls.data.scan import Samples, scan_labelled
from easycls.engine.distill import load_teacher
from easycls.engine.hooks.base import Hook, build_hook
from easycls.engine.hooks.records import DataPreviewHook, LoggerHook, ReportHook, TensorBoardHook
from easycls.engine.hooks.training import (
    CalibrationHook,
    CheckpointHook,
    EarlyStopHook,
    EMAHook,
    FreezeHook,
    ParamSchedulerHook,
)
from easycls.engine.runner import ModelRunner
from easycls.engine.tracking import MONITORS
from easycls.models.factory import (
    TV_PREFIX,
    create_model,
    hub_weights,
    is_hub_pretrained,
    load_pretrained,
    model_norm,
    resolve_name,
)
from easycls.optim.losses import create_loss
from easycls.optim.optimizers import create_optimizer
from easycls.optim.schedulers import create_scheduler

log = logging.getLogger(__name__)


def preflight(cfg: dict) -> None:
    """Checks that need no data, made before anything is scanned or written: the model name, the pretrained
    file and GPU_ID."""
    name = resolve_name(cfg["model_name"])
    pretrained = cfg["pretrained"]
    if isinstance(pretrained, str) and pretrained and not is_hub_pretrained(pretrained):
        if not os.path.isfile(pretrained):
            raise ConfigError(f"pretrained file not found: {pretrained}")
    elif isinstance(pretrained, str) and pretrained.isupper() and not name.startswith(TV_PREFIX):
        raise ConfigError(f"pretrained={pretrained!r} names torchvision weights, but {name} is a timm model; use "
                          f"True, 'hf-hub:org/name' or a file")
    if torch.cuda.is_available() and cfg["GPU_ID"].lower() != "cpu":
        check_gpu_id(cfg["GPU_ID"])
    if cfg["use_distill"] and not os.path.isfile(cfg["teacher_path"]):
        raise ConfigError(f"use_distill=1 needs teacher_path, a checkpoint this toolkit wrote; not found: "
                          f"{cfg['teacher_path']!r}")
    if cfg["label_type"] == "DIR" and cfg["label_path"]:
        log.warning("label_path=%r is not read: label_type='DIR' takes labels from the class folders",
                    cfg["label_path"])


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
        samples.weights = sample_weights(samples, cfg["sample_weights"], cfg["train_path"])
    return samples


def csv_split(cfg: dict) -> Tuple[Samples, Samples]:
    """label_type='CSV': labels from ``label_path``; val from its split column, else ``val_path`` (class folders),
    else a seeded stratified ``val_fraction`` of it; ``save_dir/split.csv`` from an earlier run wins on resume."""
    saved = files.out(cfg, files.SPLIT)
    source = saved if cfg["resume"] and os.path.isfile(saved) else cfg["label_path"]
    samples, split = read_label_csv(source, cfg["train_path"], cfg["class_names"] or None)
    samples = _checked(samples, cfg, "labels in " + source)
    if split is None and cfg["val_path"]:
        return samples, scan_labelled(cfg["val_path"], samples.classes)
    if split is None:
        from sklearn.model_selection import train_test_split
        train_idx, val_idx = train_test_split(np.arange(len(samples.paths)), test_size=cfg["val_fraction"],
                                              random_state=cfg["random_seed"], stratify=samples.labels)
        split = ["val" if i in set(val_idx) else "train" for i in range(len(samples.paths))]
    pick = lambda name: [i for i, s in enumerate(split) if s == name]  # noqa: E731
    return samples.subset(pick("train")), samples.subset(pick("val"))


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
    """Class folders: ``val_path``, or fold ``val_fold`` of ``train_path``."""
    train = _checked(scan_labelled(require_folder(cfg, "train_path"), cfg["class_names"] or None), cfg,
                     "class folders")
    if cfg["val_path"]:
        val = scan_labelled(require_folder(cfg, "val_path"), train.classes)
    else:
        folds = StratifiedKFold(cfg["k_flod"], shuffle=True, random_state=cfg["random_seed"])
        train_idx, val_idx = list(folds.split(train.paths, train.labels))[cfg["val_fold"]]
        train, val = train.subset(train_idx), train.subset(val_idx)
        log.info("val_path is '': using fold %d of %d from train as val", cfg["val_fold"], cfg["k_flod"])
    return train, val


def use_ram_cache(cfg: dict, n_images: int) -> bool:
    """Whether ``n_images`` decoded at the target size fit the ``cache_mb`` budget (or the cache is forced)."""
    if cfg["cache"] != "auto":
        return cfg["cache"] == "ram"
    height, width = image_size(cfg)
    return n_images * cfg["channels"] * height * width <= cfg["cache_mb"] * 2 ** 20


def make_loader(samples: Samples, cfg: dict, batch_size: int, train: bool, dist: DistInfo, ram: bool,
                progress: bool = False):
    """A memory loader over decoded images, or a streaming one; both yield the same batches. Training drops the
    last partial batch (a different one each epoch, as the order is reshuffled)."""
    size = image_size(cfg)
    workers = cfg["num_workers"]
    if ram:
        images, samples = decode_all(samples, cfg["channels"], size, workers, progress)
    sampler = EpochSampler(len(samples.paths), shuffle=train, seed=cfg["random_seed"], rank=dist.rank,
                           world=dist.world, even=train, weights=samples.weights if train else None)
    drop_last = train and len(sampler) > batch_size  # a last batch of 1 breaks BatchNorm
    if ram:
        return MemoryLoader(images, samples, batch_size, sampler, drop_last)
    return StreamLoader(FileDataset(samples, cfg["channels"], size), batch_size, sampler, workers, drop_last)


def build_train_loaders(cfg: dict, dist: DistInfo, progress: bool = False):
    """Train and val loaders plus the class names, with the RAM cache when the data fits; ``progress`` shows the
    decoding. Logs the counts of the images used and warns about a split that lacks a class."""
    train, val = train_val_samples(cfg)
    ram = use_ram_cache(cfg, len(train.paths) + len(val.paths))
    show = progress and dist.is_main
    train_loader = make_loader(train, cfg, cfg["batch_size"], True, dist, ram, show)
    val_loader = make_loader(val, cfg, cfg["test_batch_size"], False, dist, ram, show)
    kept = [len(loader.samples.paths) for loader in (train_loader, val_loader)]
    skipped = len(train.paths) + len(val.paths) - sum(kept)
    how = "decoded once into memory" + (f", {skipped} unreadable skipped" if skipped else "") if ram else \
        "streamed from disk (an unreadable file is skipped when met)"
    log.info("data: %d train / %d val images, %d classes, %s", *kept, len(train.classes), how)
    if dist.is_main:
        warn_missing_classes(cfg, {"train": train_loader.samples, "val": val_loader.samples})
    return train_loader, val_loader, train.classes


# ----------------------------------------------------------------------------- training
def build_model(cfg: dict) -> Tuple[nn.Module, ModelMeta]:
    """A new model with ``class_number`` outputs, with pretrained weights when configured (a local file, or timm's
    or torchvision's hub), and its metadata; ``meta.class_names`` is filled in once the data is scanned.
    ``class_number=None`` counts the classes of the data (:func:`~easycls.data.checks.with_class_number`)."""
    name, weights, mean, std = resolve_name(cfg["model_name"]), cfg["pretrained"], None, None
    if is_hub_pretrained(weights):  # first: weights that cannot be had fail before the data is looked at
        weights, hub_name, mean, std = hub_weights(name, weights)
        if hub_name != name:
            log.info("pretrained %s is a %s", cfg["pretrained"], hub_name)
        name = hub_name
    cfg = with_class_number(cfg)
    model = create_model(name, cfg["class_number"], cfg["channels"], cfg["dropout"])
    if weights:
        load_pretrained(model, weights, cfg["pretrained_key_map"])
    mean, std = model_norm(model, cfg["channels"], mean, std)
    meta = ModelMeta(name, [], list(image_size(cfg)), cfg["channels"], cfg["mean"] or mean, cfg["std"] or std)
    return model, meta


def place_model(model: nn.Module, cfg: dict, device: torch.device, dist: DistInfo) -> nn.Module:
    """On ``device`` in the configured memory format; SyncBatchNorm under torchrun on CUDA when asked."""
    if cfg["sync_bn"] and dist.enabled:
        if device.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)  # same Parameters, same state_dict keys
        elif dist.is_main:
            log.warning("sync_bn=True needs CUDA (torch's SyncBatchNorm is GPU-only); on CPU each process "
                        "keeps its own BatchNorm statistics")
    return model.to(device, memory_format=torch.channels_last if cfg["channels_last"] else torch.preserve_format)


def build_hooks(cfg: dict) -> List[Hook]:
    """The built-in hooks a config asks for, followed by its ``custom_hooks``."""
    hooks = [ParamSchedulerHook(), EarlyStopHook(cfg["monitor"], cfg["early_stop_patient"]), LoggerHook(),
             CheckpointHook(cfg["monitor"], cfg["save_best_only"], cfg["save_one_only"])]
    if cfg["freeze_nonlinear_epoch"]:
        hooks.append(FreezeHook(cfg["freeze_nonlinear_epoch"]))
    if cfg["ema"]:
        hooks.append(EMAHook(cfg["ema_decay"]))
    if cfg["tensorboard"]:
        hooks.append(TensorBoardHook())
    if cfg["calibrate"]:
        hooks.append(CalibrationHook())
    if cfg["show_data"]:
        hooks.append(DataPreviewHook())
    hooks.append(ReportHook())
    return hooks + [build_hook(item) for item in cfg["custom_hooks"]]


def class_weights(cfg: dict, train_labels: Optional[Sequence[int]]) -> Optional[List[float]]:
    """The loss weights: ``class_weight`` as given, or ``'balanced'``: n / (classes x count), as scikit-learn's."""
    if cfg["class_weight"] != "balanced":
        return cfg["class_weight"]
    if train_labels is None:
        raise ConfigError("class_weight='balanced' needs the training labels (build_runner(train_labels=...))")
    from sklearn.utils.class_weight import compute_class_weight
    classes = np.arange(cfg["class_number"])
    present = np.unique(train_labels)
    weights = dict(zip(present, compute_class_weight("balanced", classes=present, y=np.asarray(train_labels))))
    return [float(weights.get(c, 0.0)) for c in classes]


def build_mixup(cfg: dict, classes: int):
    """timm's Mixup for ``mixup`` / ``cutmix`` (True: timm's usual alphas 0.8 and 1.0), or None when both are off."""
    alpha = {"mixup": 0.8, "cutmix": 1.0}
    mixup, cutmix = (alpha[k] if cfg[k] is True else float(cfg[k] or 0.0) for k in ("mixup", "cutmix"))
    if not (mixup or cutmix):
        return None
    from timm.data import Mixup
    return Mixup(mixup_alpha=mixup, cutmix_alpha=cutmix, prob=cfg["mixup_prob"], switch_prob=cfg["mixup_switch_prob"],
                 label_smoothing=cfg["label_smooth"], num_classes=classes)


def build_runner(cfg: dict, model: nn.Module, meta: ModelMeta, dist: Optional[DistInfo] = None,
                 device: Optional[torch.device] = None, loss_fn: Optional[nn.Module] = None,
                 hooks: Optional[Sequence[Hook]] = None, train_labels: Optional[Sequence[int]] = None) -> ModelRunner:
    """The runner with every training part the config names; ``loss_fn`` and ``hooks`` replace the config's.
    ``train_labels`` feed ``class_weight='balanced'``."""
    dist = dist or DistInfo()
    device = device or select_device(cfg, dist)
    model = place_model(model, cfg, device, dist)
    optimizer = create_optimizer(cfg["optimizer"], model, cfg["learning_rate"], cfg["weight_decay"])
    scheduler = create_scheduler(cfg["scheduler"], optimizer, cfg["epochs"], cfg["warmup_epoch"],
                                 MONITORS[cfg["monitor"]])
    mix = build_mixup(cfg, len(meta.class_names))
    smoothing = 0.0 if mix else cfg["label_smooth"]  # mixing folds the smoothing into its soft targets
    loss_fn = loss_fn or create_loss(cfg["loss"], smoothing, class_weights(cfg, train_labels))
    preprocess = Preprocessor(meta.mean, meta.std, meta.channels, device, cfg["channels_last"],
                              build_augment(cfg["augment"], cfg["hflip"]), build_erasing(cfg["random_erasing"], device))
    return ModelRunner(model, meta, cfg, device, optimizer=optimizer, scheduler=scheduler, loss_fn=loss_fn.to(device),
                       preprocess=preprocess, hooks=build_hooks(cfg) if hooks is None else hooks, dist=dist, mix=mix,
                       distiller=load_teacher(cfg, meta) if cfg["use_distill"] else None)
