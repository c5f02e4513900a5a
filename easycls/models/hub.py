"""Models with downloadable pretrained weights: timm's own hub loading (``pretrained=True`` or ``'hf-hub:org/name'``)
and torchvision's weights API for ``tv:`` models, with a quick look at the network first.

Without a network and with nothing cached, huggingface_hub (2.4) retries each file five times with backoff (sleeps
of 1, 2, 4, 8 and 8 s, whatever ``HF_HUB_ETAG_TIMEOUT`` says), and timm asks for two files: 24 warnings and 48 s
here before timm gives up. torch.hub's download has no timeout at all. So before downloading, one HEAD request of at
most ``PROBE_TIMEOUT`` seconds asks whether the server answers. When it does not, timm runs in huggingface_hub's
offline mode (what ``HF_HUB_OFFLINE=1`` sets), which takes the weights from the local cache or fails at once, and
torchvision's weights must already be in torch.hub's cache; otherwise a one-line :class:`ConfigError` names both
ways out: a cache filled once online, or a local weights file.
"""
from __future__ import annotations

import contextlib
import http.client
import logging
import os
import re
import threading
import urllib.error
import urllib.parse
import urllib.request

import timm
import torch
import torchvision
from huggingface_hub import constants as hf_constants
from huggingface_hub.utils import LocalEntryNotFoundError, OfflineModeIsEnabled
from timm.data import resolve_model_data_config
from timm.models import get_pretrained_cfg
from torch import nn

from easycls.core.errors import CheckpointError, ConfigError, EasyclsError
from easycls.models.factory import TV_PREFIX, classifier_prefix, create_model, load_pretrained

log = logging.getLogger(__name__)

HF_HUB_PREFIX = "hf-hub:"
PROBE_TIMEOUT = 5.0  # seconds; a reachable server answers a HEAD in well under one
LOCAL_FILE = "set pretrained to a local .pth/.safetensors file"


def is_hub_pretrained(pretrained) -> bool:
    """True when ``pretrained`` asks for downloadable weights rather than a local file."""
    return pretrained is True or (isinstance(pretrained, str) and (
        pretrained.startswith(HF_HUB_PREFIX) or re.fullmatch(r"[A-Z][A-Z0-9_]*", pretrained) is not None))


def unreachable(url: str, timeout: float | None = None) -> str | None:
    """None when the server of ``url`` answers a HEAD request within ``timeout`` seconds (default
    ``PROBE_TIMEOUT``; any HTTP status), else why not (``'Name or service not known'``, ``'no answer within 5s'``,
    ...).

    It goes through the proxies the environment sets, as huggingface_hub and torch.hub do. The request runs in a
    thread, so that a slow name lookup, which socket timeouts do not cover, is bounded too.
    """
    timeout = PROBE_TIMEOUT if timeout is None else timeout
    outcome = [f"no answer within {timeout:g}s"]

    def probe():
        try:
            urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout).close()
            outcome[0] = None
        except urllib.error.HTTPError:
            outcome[0] = None  # the server answered, if only with an error status
        except (OSError, http.client.HTTPException) as exc:
            outcome[0] = str(getattr(exc, "reason", exc))

    thread = threading.Thread(target=probe, name="easycls-probe", daemon=True)
    thread.start()
    thread.join(timeout)
    return outcome[0]


def create_hub_model(name: str, pretrained, num_classes: int, in_chans: int = 3,
                     dropout: float = 0.0) -> tuple[nn.Module, str, list[float], list[float]]:
    """A classifier with ``num_classes`` outputs and ``in_chans`` input channels whose backbone holds downloadable
    weights: timm's (``True``, or ``'hf-hub:org/name'``, whose config names the architecture) or torchvision's
    (``True`` = DEFAULT, or a weights enum name) for a ``tv:`` model.

    Returns the model, the architecture's name and the mean and std the weights were trained with. The head is
    new unless ``num_classes`` is the weights' own; an RGB stem is adapted to ``in_chans`` (summed for one channel).
    """
    if name.startswith(TV_PREFIX):
        return _torchvision_model(name, pretrained, num_classes, in_chans, dropout)
    wanted = pretrained if isinstance(pretrained, str) else name
    try:
        with _reachable_timm_source(wanted):
            model = timm.create_model(wanted, pretrained=True, num_classes=num_classes, in_chans=in_chans,
                                      drop_rate=dropout)
    except EasyclsError:
        raise
    except (OSError, RuntimeError, ValueError, KeyError) as exc:
        raise CheckpointError(f"cannot get the pretrained weights of {wanted} ({str(exc).splitlines()[0][:160]}); "
                              f"{LOCAL_FILE}") from None
    cfg = model.pretrained_cfg
    log.info(_timm_summary(model, cfg, num_classes, in_chans))
    data = resolve_model_data_config(model)
    arch = cfg.get("architecture", name) if wanted.startswith(HF_HUB_PREFIX) else name
    return model, arch, list(data["mean"]), list(data["std"])


@contextlib.contextmanager
def _reachable_timm_source(wanted: str):
    """Run the block in huggingface_hub's offline mode when the hub does not answer; a cache miss there, or
    weights behind an unreachable URL that are not in torch.hub's cache, is a one-line :class:`ConfigError`."""
    cfg = None if wanted.startswith(HF_HUB_PREFIX) else get_pretrained_cfg(wanted)
    if cfg is not None and not cfg.hf_hub_id:  # the few timm weights outside the hub, or none at all
        if cfg.url:
            _require_url(cfg.url, wanted)
        yield
        return
    offline, why = False, "HF_HUB_OFFLINE is set" if hf_constants.HF_HUB_OFFLINE else None
    if not why:
        reason = unreachable(hf_constants.ENDPOINT)
        offline, why = bool(reason), reason and f"{hf_constants.ENDPOINT} cannot be reached ({reason})"
    try:
        with _hub_offline(offline):
            yield
    except (LocalEntryNotFoundError, OfflineModeIsEnabled):
        if not why:
            raise
        raise ConfigError(f"cannot get the pretrained weights of {wanted}: {why} and they are not in the cache "
                          f"{hf_constants.HF_HUB_CACHE}; either fill that cache once online and run with "
                          f"HF_HUB_OFFLINE=1, or {LOCAL_FILE}") from None


@contextlib.contextmanager
def _hub_offline(offline: bool):
    """huggingface_hub's offline mode for the block: the switch ``HF_HUB_OFFLINE=1`` sets, read at each request."""
    saved = hf_constants.HF_HUB_OFFLINE
    hf_constants.HF_HUB_OFFLINE = saved or offline
    try:
        yield
    finally:
        hf_constants.HF_HUB_OFFLINE = saved


def _timm_summary(model: nn.Module, cfg: dict, num_classes: int, in_chans: int) -> str:
    """What timm's loading did by its rules: a new head when the class count differs, an adapted stem when the
    channel count does."""
    source = cfg.get("hf_hub_id") or cfg.get("url") or cfg.get("architecture")
    head = (f"new head '{classifier_prefix(model)}' for {num_classes} classes (the weights have {cfg['num_classes']})"
            if num_classes != cfg.get("num_classes") else f"head '{classifier_prefix(model)}' loaded")
    weights_chans = (cfg.get("input_size") or (3,))[0]
    stem = f", input conv {cfg.get('first_conv')} adapted from {weights_chans} to {in_chans} channel(s)" \
        if in_chans != weights_chans else ""
    return f"pretrained: {source} through timm, backbone loaded, {head}{stem}"


def _require_url(url: str, wanted: str) -> str:
    """The path torch.hub caches ``url`` at; a :class:`ConfigError` when it is not there and the server of ``url``
    does not answer."""
    cached = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(urllib.parse.urlsplit(url).path))
    if not os.path.isfile(cached):
        reason = unreachable(url)
        if reason:
            raise ConfigError(f"cannot get the pretrained weights of {wanted}: {urllib.parse.urlsplit(url).netloc} "
                              f"cannot be reached ({reason}) and {cached} does not exist; either put the file "
                              f"there once online (TORCH_HOME sets the folder), or {LOCAL_FILE}")
    return cached


def _torchvision_model(name: str, pretrained, num_classes: int, in_chans: int, dropout: float):
    """torchvision's weights (from torch.hub's cache, or downloaded there) loaded into a new ``num_classes`` model:
    torchvision builds pretrained models with 1000 classes only, so the backbone is copied."""
    base = name[len(TV_PREFIX):]
    enum = torchvision.models.get_model_weights(base)
    choice = "DEFAULT" if pretrained is True else pretrained
    if choice not in enum.__members__:
        raise ConfigError(f"{name} has no weights {choice!r}; choose from {', '.join(enum.__members__)} or True")
    weights = enum[choice]
    cached = _require_url(weights.url, name)
    try:
        state = torch.hub.load_state_dict_from_url(weights.url, model_dir=os.path.dirname(cached),
                                                   map_location="cpu", weights_only=True)
    except OSError as exc:
        raise CheckpointError(f"cannot get the pretrained weights of {name} ({str(exc).splitlines()[0][:160]}); "
                              f"{LOCAL_FILE}") from None
    model = create_model(name, num_classes, in_chans, dropout)
    load_pretrained(model, state)
    transform = weights.transforms()
    return model, name, list(transform.mean), list(transform.std)
