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

from easycls.core.checkpoints import ModelMeta
from easycls.core.device import check_gpu_id, select_device
from easycls.core.distributed import DistInfo
from easycls.core.errors import ConfigError
from easycls.data.augment import build_augment, build_erasing
from easycls.data.checks import with_class_number
from easycls.data.images import image_size
from easycls.data.loaders import Preprocessor
from easycls.data.multilabel import positive_weights
from easycls.engine.budget import TimeBudget, check_budget_config
from easycls.engine.distill import load_teacher
from easycls.engine.hooks.base import Hook, build_hook
from easycls.engine.hooks.budget import AnnealBeforeStopHook, BudgetHook
from easycls.engine.hooks.records import DataPreviewHook, LoggerHook, ReportHook, TensorBoardHook
from easycls.engine.hooks.training import (
    CalibrationHook,
    CheckpointHook,
    EarlyStopHook,
    EMAHook,
    FreezeHook,
    ParamSchedulerHook,
    ThresholdHook,
)
from easycls.engine.runner import ModelRunner
from easycls.engine.splits import build_train_loaders, holdout, train_val_samples  # noqa: F401  (the builder's face)
from easycls.engine.tracking import MONITORS, resolve_monitor
from easycls.evaluation.targets import target_kind
from easycls.models.auto import AUTO
from easycls.models.factory import TV_PREFIX, create_model, load_pretrained, model_norm, resolve_name
from easycls.models.hub import create_hub_model, is_hub_pretrained
from easycls.optim.losses import LOSSES, create_loss
from easycls.optim.optimizers import create_optimizer
from easycls.optim.schedulers import create_scheduler, create_time_scheduler

log = logging.getLogger(__name__)


def preflight(cfg: dict) -> None:
    """Checks that need no data, made before anything is scanned or written: the model name, the pretrained
    file, GPU_ID and what a time budget allows."""
    check_budget_config(cfg)
    name = cfg["model_name"] if cfg["model_name"] == AUTO else resolve_name(cfg["model_name"])
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


# ----------------------------------------------------------------------------- training
def build_model(cfg: dict) -> Tuple[nn.Module, ModelMeta]:
    """A new model with ``class_number`` outputs, with pretrained weights when configured (a local file, or timm's
    or torchvision's hub), and its metadata; ``meta.class_names`` is filled in once the data is scanned.
    ``class_number=None`` counts the classes of the data (:func:`~easycls.data.checks.with_class_number`)."""
    cfg = with_class_number(cfg) if cfg["class_number"] is None else cfg
    name, weights, mean, std = resolve_name(cfg["model_name"]), cfg["pretrained"], None, None
    if is_hub_pretrained(weights):
        model, hub_name, mean, std = create_hub_model(name, weights, cfg["class_number"], cfg["channels"],
                                                      cfg["dropout"])
        if hub_name != name:
            log.info("pretrained %s is a %s", cfg["pretrained"], hub_name)
        name = hub_name
    else:
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


def build_hooks(cfg: dict, budget: Optional[TimeBudget] = None, multi_label: bool = False) -> List[Hook]:
    """The built-in hooks a config asks for (and a multi-label model needs), followed by its ``custom_hooks``; with
    a time ``budget`` its :class:`BudgetHook` sets the learning rate instead of the per-epoch ParamSchedulerHook."""
    cfg = resolve_monitor(cfg, multi_label)  # monitor='auto' names the metric of the data's kind
    schedule = BudgetHook(budget) if budget is not None else ParamSchedulerHook()
    hooks = [schedule, EarlyStopHook(cfg["monitor"], cfg["early_stop_patience"]),
             LoggerHook(status=schedule.status if budget is not None else None),
             CheckpointHook(cfg["monitor"], cfg["save_best_only"], cfg["save_one_only"])]
    if budget is not None and cfg["early_stop_patience"]:
        hooks.append(AnnealBeforeStopHook(budget))
    if cfg["freeze_nonlinear_epoch"]:
        hooks.append(FreezeHook(cfg["freeze_nonlinear_epoch"]))
    if cfg["ema"]:
        hooks.append(EMAHook(cfg["ema_decay"]))
    if cfg["tensorboard"]:
        hooks.append(TensorBoardHook())
    if cfg["calibrate"]:
        hooks.append(CalibrationHook())
    if multi_label:
        hooks.append(ThresholdHook())
    if cfg["show_data"]:
        hooks.append(DataPreviewHook())
    hooks.append(ReportHook())
    return hooks + [build_hook(item) for item in cfg["custom_hooks"]]


def build_loss(cfg: dict, multi_label: bool, smoothing: float, train_labels: Optional[Sequence]) -> nn.Module:
    """The ``loss`` spec (multi-label: 'CE', the default, means BCE); ``class_weight='balanced'`` weighs classes by
    scikit-learn's n / (classes x count), or for a multi-label model each class's positives by its negatives /
    positives (``pos_weight``)."""
    spec = cfg["loss"]
    if multi_label and LOSSES.parse(spec)[0].name == "CE":
        log.info("loss='CE' is a softmax over the classes; multi-label data trains with BCE, a sigmoid per class")
        spec = "BCE"
    if not (multi_label and cfg["class_weight"] == "balanced"):
        return create_loss(spec, smoothing, class_weights(cfg, train_labels), multi_label)
    if train_labels is None:
        raise ConfigError("class_weight='balanced' needs the training labels (build_runner(train_labels=...))")
    return create_loss(spec, smoothing, None, True, positive_weights(train_labels))


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


def build_mixup(cfg: dict, classes: int, multi_label: bool = False):
    """timm's Mixup for ``mixup`` / ``cutmix`` (True: timm's usual alphas 0.8 and 1.0), or None when both are off;
    for multi-label it mixes the 0/1 targets of the pair."""
    alpha = {"mixup": 0.8, "cutmix": 1.0}
    mixup, cutmix = (alpha[k] if cfg[k] is True else float(cfg[k] or 0.0) for k in ("mixup", "cutmix"))
    if not (mixup or cutmix):
        return None
    from timm.data import Mixup
    return Mixup(mixup_alpha=mixup, cutmix_alpha=cutmix, prob=cfg["mixup_prob"], switch_prob=cfg["mixup_switch_prob"],
                 label_smoothing=cfg["label_smooth"], num_classes=classes, multi_label=multi_label)


def build_runner(cfg: dict, model: nn.Module, meta: ModelMeta, dist: Optional[DistInfo] = None,
                 device: Optional[torch.device] = None, loss_fn: Optional[nn.Module] = None,
                 hooks: Optional[Sequence[Hook]] = None, train_labels: Optional[Sequence[int]] = None,
                 budget: Optional[TimeBudget] = None) -> ModelRunner:
    """The runner with every training part the config names, for the target kind of ``meta`` (single- or
    multi-label); ``loss_fn`` and ``hooks`` replace the config's. ``train_labels`` (class indices, or 0/1 rows for
    a multi-label model) feed ``class_weight='balanced'``; a time ``budget`` plans the learning rate over time."""
    cfg, multi = resolve_monitor(cfg, meta.multi_label), meta.multi_label
    if multi and cfg["use_distill"]:
        raise ConfigError("use_distill=1 distils a softmax over the classes; it is not available for multi-label "
                          "data")
    dist = dist or DistInfo()
    device = device or select_device(cfg, dist)
    model = place_model(model, cfg, device, dist)
    optimizer = create_optimizer(cfg["optimizer"], model, cfg["learning_rate"], cfg["weight_decay"])
    if budget is not None:
        scheduler = create_time_scheduler(cfg["scheduler"], optimizer, cfg["budget_warmup"])
    else:
        scheduler = create_scheduler(cfg["scheduler"], optimizer, cfg["epochs"], cfg["warmup_epoch"],
                                     MONITORS[cfg["monitor"]])
    mix = build_mixup(cfg, len(meta.class_names), multi)
    smoothing = 0.0 if mix else cfg["label_smooth"]  # mixing folds the smoothing into its soft targets
    loss_fn = loss_fn or build_loss(cfg, multi, smoothing, train_labels)
    preprocess = Preprocessor(meta.mean, meta.std, meta.channels, device, cfg["channels_last"],
                              build_augment(cfg["augment"], cfg["hflip"]), build_erasing(cfg["random_erasing"], device))
    return ModelRunner(model, meta, cfg, device, optimizer=optimizer, scheduler=scheduler, loss_fn=loss_fn.to(device),
                       preprocess=preprocess, hooks=build_hooks(cfg, budget, multi) if hooks is None else hooks,
                       dist=dist, mix=mix, distiller=load_teacher(cfg, meta, device) if cfg["use_distill"] else None,
                       kind=target_kind(multi, None if isinstance(cfg["threshold"], str) else cfg["threshold"]))
