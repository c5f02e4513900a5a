"""Model creation (timm names, torchvision through ``tv:``), pretrained loading with a report, freezing."""
from __future__ import annotations

import difflib
import logging
import re
from dataclasses import dataclass, field

import timm
import torch
import torch.nn.functional as F
import torchvision
from timm.data import resolve_model_data_config
from timm.models import adapt_input_conv
from torch import nn

from easycls.core.checkpoints import read_state_dict
from easycls.core.errors import CheckpointError, ConfigError
from easycls.models import small  # noqa: F401  (registers the small-input ResNets with timm)
from easycls.models.aliases import MODEL_ALIASES

log = logging.getLogger(__name__)

STRIP_PREFIXES = ("module.", "model.", "pretrain_", "_orig_mod.")
TV_PREFIX = "tv:"


def resolve_name(name: str) -> str:
    """Map an alias to its real name and check that timm or torchvision knows it."""
    name = MODEL_ALIASES.get(name, name)
    if name.startswith(TV_PREFIX):
        known = torchvision.models.list_models()
        base = name[len(TV_PREFIX):]
    else:
        known = timm.list_models()
        base = name.split(".")[0]
    if base not in known:
        close = difflib.get_close_matches(base, known + list(MODEL_ALIASES), n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(f"unknown model_name '{name}'{hint} Use a timm name, an alias "
                          f"({', '.join(sorted(MODEL_ALIASES)[:6])}, ...) or 'tv:<torchvision name>'.")
    return name


def create_model(name: str, num_classes: int, in_chans: int = 3, dropout: float = 0.0) -> nn.Module:
    """Build an untrained classifier with ``num_classes`` outputs and ``in_chans`` input channels."""
    name = resolve_name(name)
    if not name.startswith(TV_PREFIX):
        return timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_chans,
                                 drop_rate=dropout)
    model = torchvision.models.get_model(name[len(TV_PREFIX):], weights=None, num_classes=num_classes)
    if in_chans != 3:
        _replace_first_conv(model, in_chans)
    if dropout:
        head = dict(model.named_modules())[classifier_prefix(model)]
        # A hook keeps the state_dict keys identical to torchvision's, so its checkpoints still load.
        head.register_forward_pre_hook(lambda mod, args: (F.dropout(args[0], dropout, mod.training),))
    return model


def _replace_first_conv(model: nn.Module, in_chans: int) -> None:
    name, conv = next((n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d))
    parent = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
    new = nn.Conv2d(in_chans, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                    conv.dilation, conv.groups, conv.bias is not None)
    setattr(parent, name.rsplit(".", 1)[-1], new)


def classifier_prefix(model: nn.Module) -> str:
    """Module name of the final classifier (``fc``, ``classifier``, ``head.fc`` ...)."""
    cfg_name = getattr(model, "pretrained_cfg", {}).get("classifier")
    if isinstance(cfg_name, str) and cfg_name in dict(model.named_modules()):
        return cfg_name
    linears = [n for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    return linears[-1]


def is_head_key(key: str, head: str) -> bool:
    return key == head or key.startswith(head + ".")


def model_norm(model: nn.Module, channels: int, mean=None, std=None) -> tuple[list[float], list[float]]:
    """The pretrained mean and std (given, else the model's through ``timm.data.resolve_model_data_config``, which
    falls back to ImageNet's for a model without a timm config), averaged to one value when ``channels`` is 1.

    The averaging is ours: timm keeps the three RGB values for a one-channel model, whose stem it sums.
    """
    data = resolve_model_data_config(model)
    mean, std = list(mean or data["mean"]), list(std or data["std"])
    if channels == 1:
        return [sum(mean) / len(mean)], [sum(std) / len(std)]
    return mean, std


def set_backbone_trainable(model: nn.Module, trainable: bool) -> None:
    """Freeze (``False``) or unfreeze every parameter outside the classifier.

    Only ``requires_grad`` changes, on purpose unlike ``timm.utils.freeze``: that one also swaps each BatchNorm for
    a ``FrozenBatchNorm2d``, while here the BatchNorm running statistics keep following the new data as the head
    trains (the backbone's features are then normalised for the data they will see once it unfreezes), and every
    module and parameter stays the same object, so the optimizer built at the start, EMA and the checkpoint keys
    are untouched when it does.
    """
    head = classifier_prefix(model)
    for name, param in model.named_parameters():
        if not is_head_key(name, head):
            param.requires_grad_(trainable)


@dataclass
class LoadReport:
    """What happened to each key of a pretrained file."""

    loaded: list[str] = field(default_factory=list)
    shape_skipped: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    adapted: list[str] = field(default_factory=list)
    head: str = ""
    backbone_total: int = 0
    backbone_loaded: int = 0

    @property
    def backbone_fraction(self) -> float:
        return self.backbone_loaded / max(1, self.backbone_total)

    def summary(self) -> str:
        head_missing = [k for k in self.missing if is_head_key(k, self.head)]
        return (f"pretrained: loaded {len(self.loaded)} keys ({self.backbone_loaded}/{self.backbone_total} backbone,"
                f" {self.backbone_fraction:.0%}), skipped for shape {len(self.shape_skipped)}, missing "
                f"{len(self.missing)} (head '{self.head}': {len(head_missing)}), unexpected {len(self.unexpected)}"
                + (f", input conv adapted: {', '.join(self.adapted)}" if self.adapted else ""))


def remap_key(key: str, target: dict[str, torch.Tensor], rules: dict[str, str]) -> str:
    """Apply the user's regex rules, then strip wrapper prefixes until the key matches the model."""
    for pattern, repl in rules.items():
        key = re.sub(pattern, repl, key)
    while key not in target:
        prefix = next((p for p in STRIP_PREFIXES if key.startswith(p)), None)
        if prefix is None:
            break
        key = key[len(prefix):]
    return key


def _fit(key: str, value: torch.Tensor, want: torch.Tensor, report: LoadReport) -> torch.Tensor | None:
    if value.shape == want.shape:
        return value
    if value.ndim == 4 and value.shape[0] == want.shape[0] and value.shape[2:] == want.shape[2:]:
        report.adapted.append(key)  # e.g. an RGB stem feeding a grayscale model
        return adapt_input_conv(want.shape[1], value.float()).to(want.dtype)
    return None


def load_pretrained(model: nn.Module, source: str | dict[str, torch.Tensor],
                    rules: dict[str, str] | None = None, min_backbone: float = 0.5) -> LoadReport:
    """Load the matching keys of ``source`` (a file path or a state_dict) into ``model``; return what was loaded,
    skipped and missing.

    Raises :class:`CheckpointError` when less than ``min_backbone`` of the backbone loads: that is almost
    always the wrong file.
    """
    path = source if isinstance(source, str) else "the pretrained weights"
    source = read_state_dict(source) if isinstance(source, str) else source
    target = model.state_dict()
    report = LoadReport(head=classifier_prefix(model))
    keep = {}
    for raw_key, value in source.items():
        key = remap_key(raw_key, target, rules or {})
        if key not in target:
            report.unexpected.append(raw_key)
            continue
        fitted = _fit(key, value, target[key], report)
        if fitted is None:
            report.shape_skipped.append(key)
        else:
            keep[key] = fitted
    report.loaded = sorted(keep)
    report.missing = [k for k in target if k not in keep]
    backbone = [k for k in target if not is_head_key(k, report.head)]
    report.backbone_total = len(backbone)
    report.backbone_loaded = sum(k in keep for k in backbone)
    if report.backbone_fraction < min_backbone:
        raise CheckpointError(f"{path}: only {report.backbone_loaded} of {report.backbone_total} backbone tensors "
                              f"match this model ({report.backbone_fraction:.0%}); is it the right file? "
                              f"Unexpected keys look like: {report.unexpected[:3]}")
    model.load_state_dict(keep, strict=False)
    log.info(report.summary())
    return report


def list_models(pattern: str = "") -> list[str]:
    """Model names ``model_name`` accepts that contain ``pattern``: the aliases, timm's names and torchvision's
    as ``tv:<name>`` (any other timm name with weights tags works too)."""
    names = sorted(MODEL_ALIASES) + timm.list_models() + [TV_PREFIX + n for n in torchvision.models.list_models()]
    return [n for n in names if pattern.lower() in n.lower()]
