"""Fit a run to its time budget before it writes anything: a short throughput probe of the model (or, with
``model_name='auto'``, of each candidate) on the run's own training batches, the check that one pass fits, and the
choice of model.

A probe trains a fresh copy of a model for ``PROBE_WARMUP + PROBE_BATCHES`` batches with the run's optimizer,
loss, augmentation, memory format and AMP, and times the last ``PROBE_BATCHES``: images per second on this machine
today. It draws from forked random generators, so the run itself starts from the same seeds as without it.
"""
import gc
import logging
import time
from dataclasses import asdict, dataclass
from typing import List, Sequence, Tuple

import torch

from easycls.core.clock import format_duration
from easycls.core.device import resolve_amp
from easycls.core.distributed import DistInfo, all_reduce_sum
from easycls.core.errors import ConfigError
from easycls.data.augment import build_augment
from easycls.data.loaders import Preprocessor
from easycls.engine.budget import EXIT_SECONDS, MARGIN, TAIL_SAFETY, VAL_SPEEDUP, WRITE_SECONDS, TimeBudget
from easycls.engine.builder import place_model
from easycls.engine.step import GradientStep
from easycls.models.auto import AUTO, AUTO_CANDIDATES, MIN_PASSES
from easycls.models.factory import create_model
from easycls.optim.losses import create_loss
from easycls.optim.optimizers import create_optimizer

log = logging.getLogger(__name__)
PROBE_WARMUP, PROBE_BATCHES = 2, 3
PROBE_SHARE = 0.05  # with 'auto', no further candidate is probed once the probes took this share of the budget
RULE = (f"the largest candidate (by parameters) that gets >= {MIN_PASSES} passes over the training data in the "
        f"budget; when none does, the one that gets the most")


@dataclass
class Probe:
    """One model's figures: its size, its training throughput here, and what that makes of the budget."""

    model_name: str
    parameters: int
    images_per_second: float
    probe_seconds: float
    epoch_seconds: float = 0.0  # training only
    tail_seconds: float = 0.0   # validation and writes, estimated
    passes: float = 0.0         # epochs that fit in the training time left


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def probe_model(cfg: dict, name: str, loader, device: torch.device) -> Probe:
    """Train a fresh ``name`` on the first batches of ``loader`` and measure its images per second."""
    started = time.monotonic()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        model = place_model(create_model(name, cfg["class_number"], cfg["channels"], cfg["dropout"]), cfg, device,
                            DistInfo())
        step = GradientStep(create_optimizer(cfg["optimizer"], model, cfg["learning_rate"], cfg["weight_decay"]),
                            create_loss(cfg["loss"], cfg["label_smooth"]).to(device), device,
                            resolve_amp(cfg["amp"], device), clip=cfg["clip_gradient"])
        half = [0.5] * cfg["channels"]
        preprocess = Preprocessor(half, half, cfg["channels"], device, cfg["channels_last"],
                                  build_augment(cfg["augment"], cfg["hflip"]))
        timings = _time_batches(model.train(), step, preprocess, loader, device)
        parameters = sum(p.numel() for p in model.parameters())
    del model, step
    gc.collect()
    images, seconds = map(sum, zip(*timings))
    return Probe(name, parameters, images / max(seconds, 1e-9), time.monotonic() - started)


def _time_batches(model, step, preprocess, loader, device) -> List[Tuple[int, float]]:
    """(images, seconds) of each timed batch, fetching included; the warm-up batches are left out."""
    timings, batches = [], iter(loader)
    for i in range(PROBE_WARMUP + PROBE_BATCHES):
        begin = time.perf_counter()
        batch = next(batches, None)
        if batch is None:
            break
        step(model, preprocess(batch.images, train=True), batch.labels.to(device))
        _sync(device)
        timings.append((len(batch.labels), time.perf_counter() - begin))
    return timings[min(PROBE_WARMUP, len(timings) - 1):]


def probe_models(cfg: dict, names: Sequence[str], loader, device, budget: TimeBudget) -> Tuple[List[Probe], float]:
    """Probe ``names`` in order; return the probes and the seconds left in the budget. Under torchrun each figure
    is the ranks' mean, so that every rank makes the same choice, and they stop probing together."""
    probes, spent = [], 0.0
    for name in names:
        probe = probe_model(cfg, name, loader, device)
        spent += probe.probe_seconds
        agreed = torch.tensor([probe.images_per_second, float(spent > PROBE_SHARE * budget.seconds), budget.left()])
        ips, stop, left = (value / budget.dist.world for value in
                           all_reduce_sum(agreed.to(budget.device), budget.dist).tolist())
        probe.images_per_second = ips
        probes.append(probe)
        if stop:
            break
    return probes, left


def plan(probe: Probe, left: float, budget: float, train_images: int, val_images: float) -> Probe:
    """Fill in the probe's epoch time, the validation and writes estimated from it, and the passes that fit in the
    ``left`` seconds of a ``budget``."""
    probe.epoch_seconds = train_images / probe.images_per_second
    probe.tail_seconds = val_images / (probe.images_per_second * VAL_SPEEDUP) + WRITE_SECONDS
    training = left - probe.tail_seconds * TAIL_SAFETY - WRITE_SECONDS - EXIT_SECONDS - MARGIN * budget
    probe.passes = max(0.0, (training + probe.tail_seconds) / (probe.epoch_seconds + probe.tail_seconds))
    return probe


def smallest_budget(probe: Probe, budget: TimeBudget) -> float:
    """The budget that fits what ran so far and one pass of ``probe``'s model with its validation and writes."""
    need = budget.elapsed() + probe.epoch_seconds + probe.tail_seconds * TAIL_SAFETY + WRITE_SECONDS + EXIT_SECONDS
    return need / (1 - MARGIN)


def too_small(cfg: dict, probe: Probe, budget: TimeBudget, train_images: int) -> ConfigError:
    return ConfigError(
        f"time_budget={cfg['time_budget']!r} ({budget.seconds:.0f} s) is too small for one pass over the data: "
        f"{budget.elapsed():.1f} s went to start-up, data and the probe, and one epoch of {probe.model_name} "
        f"({train_images} images at {probe.images_per_second:.0f} img/s) takes about {probe.epoch_seconds:.1f} s "
        f"plus {probe.tail_seconds:.1f} s of validation and writes; the smallest budget that fits is about "
        f"{format_duration(smallest_budget(probe, budget) + 0.5)}")


def fit_to_budget(cfg: dict, budget: TimeBudget, train_loader, val_images: float, device) -> Tuple[dict, dict]:
    """Probe, check that one pass fits (else a one-line :class:`ConfigError`), choose the model for 'auto'.

    Returns the config to train (its ``model_name`` chosen) and the probe's record for ``config.json``."""
    names = AUTO_CANDIDATES if cfg["model_name"] == AUTO else (cfg["model_name"],)
    train_images = len(train_loader) * cfg["batch_size"]
    probes, left = probe_models(cfg, names, train_loader, device, budget)
    probes = [plan(p, left, budget.seconds, train_images, val_images) for p in probes]
    fitting = [p for p in probes if p.passes >= MIN_PASSES]
    chosen = max(fitting, key=lambda p: p.parameters) if fitting else max(probes, key=lambda p: p.passes)
    if chosen.passes < 1:
        raise too_small(cfg, chosen, budget, train_images)
    budget.estimate_validation(val_images, chosen.images_per_second)
    if cfg["model_name"] == AUTO:
        _log_choice(probes, chosen, bool(fitting))
    record = {"model_name": cfg["model_name"], "chosen": chosen.model_name, "rule": RULE,
              "probes": [asdict(p) for p in probes], "images_per_pass": train_images}
    return {**cfg, "model_name": chosen.model_name}, record


def _log_choice(probes: List[Probe], chosen: Probe, fitting: bool) -> None:
    log.info("model_name='auto': %d candidates probed on this run's batches (passes that fit the budget):",
             len(probes))
    for p in probes:
        log.info("  %-22s %5.1fM parameters  %6.0f img/s  %5.1f passes%s", p.model_name, p.parameters / 1e6,
                 p.images_per_second, p.passes, "  <- chosen" if p is chosen else "")
    if fitting:
        log.info("chose %s: %s", chosen.model_name, RULE)
    else:
        log.warning("no candidate gets %d passes in this budget; chose %s, the one that gets the most (%.1f)",
                    MIN_PASSES, chosen.model_name, chosen.passes)
