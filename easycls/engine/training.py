"""A whole training run from a validated config: one run, every fold of a cross-validation, or the LR range test.

This is what :func:`easycls.train` and ``python train.py`` run. It logs (to the ``easycls`` logger and the run's
``train.log``) and prints nothing; each function returns a summary dict.
"""
import logging
import os
import time
from typing import Optional

import pandas as pd
import torch

from easycls.core import files
from easycls.core.checkpoints import atomic_write, load_checkpoint, save_json
from easycls.core.clock import parse_duration
from easycls.core.device import select_device
from easycls.core.distributed import init_from_env
from easycls.core.errors import ConfigError, DataError
from easycls.core.files import plain
from easycls.core.runlog import RunLog
from easycls.data.audit import run_audit
from easycls.data.checks import warn_dropped_colour, with_class_number
from easycls.data.multilabel import class_counts, joined
from easycls.data.scan import class_folders, image_ids, loader_labels
from easycls.engine import builder, kfold
from easycls.engine.budget import DeadlineLoader, TimeBudget
from easycls.engine.probe import fit_to_budget
from easycls.engine.rng import seed_all
from easycls.engine.tracking import CheckpointSaver, resolve_monitor
from easycls.models.auto import AUTO

log = logging.getLogger(__name__)
BUILTIN_DIGITS = "data/digits"


def train(cfg: dict, progress: bool = False, started: Optional[float] = None) -> dict:
    """Train as ``cfg`` says: k-fold cross-validation when ``val_path`` is '' (class folders; a labels CSV with
    ``val_fraction=0``), else one run.
    A ``time_budget`` counts from ``started``, a ``time.monotonic()`` reading (default: now)."""
    started = time.monotonic() if started is None else started
    if int(os.environ.get("RANK", "0")) == 0:
        warn_dropped_colour(cfg)
    if not cfg["val_path"] and (cfg["label_type"] == "DIR" or cfg["val_fraction"] == 0):
        return train_folds(cfg, progress, started)
    return train_one(cfg, progress, started)


def train_folds(cfg: dict, progress: bool = False, started: Optional[float] = None) -> dict:
    """val_path='': folds start_fold..k_fold-1 (only fold val_fold when it is set), each into save_dir/fold{i},
    then the out-of-fold predictions of every fold that has a best.pth and the suspect-label ranking."""
    builder.preflight(cfg)
    main = int(os.environ.get("RANK", "0")) == 0
    if main:
        ensure_builtin_data(cfg)
    samples, folds, ids = kfold.prepare(cfg, image_ids)
    chosen = [cfg["val_fold"]] if cfg["val_fold"] is not None else range(cfg["start_fold"], cfg["k_fold"])
    results = []
    for fold in chosen:
        log.info("fold %d of folds %d..%d -> %s", fold, chosen[0], chosen[-1], kfold.fold_dir(cfg, fold))
        results.append(train_one(kfold.fold_config(cfg, fold), progress, started))
    summary = {"folds": results, "cv": None}
    if main:
        with RunLog() as run_log:
            run_log.start(cfg["save_dir"], files.LOGS["kfold"])
            summary["cv"] = kfold.write_out_of_fold(cfg, samples, folds, ids)
    return summary


def resume_path(cfg: dict) -> str:
    """The checkpoint ``resume`` names: a path, or the newer of save_dir's last.pth and interrupted.pth."""
    if isinstance(cfg["resume"], str):
        path = cfg["resume"]
    else:
        candidates = [files.out(cfg, n) for n in (files.LAST, files.INTERRUPTED)]
        candidates = [p for p in candidates if os.path.isfile(p)]
        if not candidates:
            raise ConfigError(f"resume=True but {cfg['save_dir']} has no last.pth or interrupted.pth")
        path = max(candidates, key=os.path.getmtime)
    if not os.path.isfile(path):
        raise ConfigError(f"resume checkpoint not found: {path}")
    return path


def train_one(cfg: dict, progress: bool = False, started: Optional[float] = None) -> dict:
    """One training run (one fold when val_path is ''); returns the runner's summary. A ``time_budget`` counts
    from ``started``, a ``time.monotonic()`` reading (default: now). ``class_number=None`` becomes the number of
    classes in the data (config.json and the checkpoints record that number)."""
    builder.preflight(cfg)
    resume = resume_path(cfg) if cfg["resume"] else None
    dist = init_from_env(torch.cuda.is_available() and cfg["GPU_ID"].lower() != "cpu")
    seconds = 0.0 if cfg["lr_find"] else parse_duration(cfg["time_budget"])  # the range test trains no model
    budget = TimeBudget(seconds, time.monotonic() if started is None else started, dist) if seconds else None
    with RunLog(dist.is_main) as run_log:
        cfg, runner, train_loader, val_loader, probed = _build(cfg, dist, budget, resume, progress)
        runner.progress = progress
        if cfg["audit"] and dist.is_main:
            run_log.start(cfg["save_dir"], files.LOGS["train"])
            _audit(cfg)
        if cfg["lr_find"]:
            return _lr_find(runner, train_loader, cfg, dist, run_log)
        if resume:
            runner.resume(resume)
            if runner.finished:
                done = runner.summary()
                log.info("this run already finished after epoch %d (best epoch %d, %s %.4f); nothing to do",
                         done["epochs_run"], done["best_epoch"], done["monitor"], done["best"])
                return done
        if dist.is_main:
            run_log.start(cfg["save_dir"], files.LOGS["train"])
            _prepare_outputs(cfg, runner.meta.class_names, train_loader, val_loader, not resume, probed)
        _log_plan(cfg, runner, runner.meta, dist)
        return runner.train(train_loader if budget is None else DeadlineLoader(train_loader, budget), val_loader)


def _build(cfg: dict, dist, budget: Optional[TimeBudget], resume: Optional[str], progress: bool):
    """The loaders and the runner; with a time budget, the probe first (it may choose the model, or stop a budget
    too small for one pass before any file is written). Returns the config as trained and the probe's record."""
    model = meta = probed = None
    if dist.is_main:
        ensure_builtin_data(cfg)
    if dist.enabled:
        torch.distributed.barrier()
    cfg = with_class_number(cfg)  # lists the class folders: cheap, and before a model is built
    seed_all(cfg["random_seed"], dist.rank)
    if cfg["model_name"] != AUTO:
        model, meta = builder.build_model(cfg)  # before scanning the images: a missing download fails at once
    train_loader, val_loader, classes = builder.build_train_loaders(cfg, dist, progress)
    multi = train_loader.samples.multi_label
    cfg = resolve_monitor(cfg, multi)
    device = select_device(cfg, dist)
    if budget is not None:
        budget.device = device
        if resume and cfg["model_name"] == AUTO:  # the resumed run's model, not a new choice
            cfg = {**cfg, "model_name": load_checkpoint(resume)["meta"]["model_name"]}
        cfg, probed = fit_to_budget(cfg, budget, train_loader, len(loader_labels(val_loader)) / dist.world, device)
    if model is None:
        model, meta = builder.build_model(cfg)
    meta.class_names, meta.multi_label = classes, multi
    labels = train_loader.samples.labels if multi else loader_labels(train_loader)
    runner = builder.build_runner(cfg, model, meta, dist, device, train_labels=labels, budget=budget)
    return cfg, runner, train_loader, val_loader, probed


def _prepare_outputs(cfg: dict, classes, train_loader, val_loader, fresh: bool, probed: Optional[dict]) -> None:
    if fresh:
        CheckpointSaver(cfg["save_dir"]).remove_stale()
    if cfg["cfg_verbose"]:
        log.info("config:\n%s", "\n".join(f"  {k} = {v!r}" for k, v in cfg.items()))
    save_json({**plain(cfg), **({files.PROBE_RECORD: probed} if probed else {})}, files.out(cfg, files.CONFIG_JSON))
    _save_data_summary(cfg, classes, train_loader, val_loader)
    if cfg["label_type"] == "CSV":
        _save_split(cfg, classes, train_loader, val_loader)


def _log_plan(cfg: dict, runner, meta, dist) -> None:
    log.info("model %s on %s%s, %d epochs, effective batch size %d (%d per process x %d%s)", meta.model_name,
             runner.device, f" x{dist.world} processes" if dist.enabled else "", cfg["epochs"],
             cfg["batch_size"] * dist.world * cfg["accumulate_steps"], cfg["batch_size"], dist.world,
             f" x {cfg['accumulate_steps']} accumulated" if cfg["accumulate_steps"] > 1 else "")


def _lr_find(runner, loader, cfg: dict, dist, run_log: RunLog) -> dict:
    """lr_find=True: the range test instead of training; no checkpoint is written."""
    from easycls.engine.lr_find import run_lr_find
    if dist.enabled:
        raise ConfigError("lr_find=True runs in one process; start it without torchrun")
    run_log.start(cfg["save_dir"], files.LOGS["train"])
    return {"lr_find": run_lr_find(runner, loader, cfg)}


def _audit(cfg: dict) -> None:
    splits = audit_splits(cfg)
    if splits:
        run_audit(splits, os.path.join(cfg["save_dir"], "audit"), max(1, cfg["num_workers"]))


def audit_splits(cfg: dict) -> dict:
    """The class-folder splits of this config: train_path unless its labels come from a CSV, val and test only
    when they have class folders."""
    splits = {}
    if cfg["label_type"] == "CSV":
        log.warning("audit: train_path %s takes its labels from %s, and the audit reads class folders; train "
                    "is not audited", cfg["train_path"], cfg["label_path"])
    else:
        splits["train"] = cfg["train_path"]
    for split in ("val", "test"):
        path = cfg[f"{split}_path"]
        try:
            if path and class_folders(path):
                splits[split] = path
        except DataError:
            log.info("audit: %s_path %s is not a class-folder dataset; not audited", split, path)
    return splits


def _save_data_summary(cfg: dict, classes, train_loader, val_loader) -> None:
    """``data.json``: images per class in train and val (the readable ones; per rank under torchrun: this rank's
    share), and the classes each split lacks."""
    counts = {split: dict(zip(classes, class_counts(loader.samples)))
              for split, loader in (("train", train_loader), ("val", val_loader))}
    missing = {split: [name for name, count in counts[split].items() if count == 0] for split in counts}
    save_json({"class_counts": counts, "missing_classes": missing}, files.out(cfg, files.DATA_JSON))


def _save_split(cfg: dict, classes, train_loader, val_loader) -> None:
    """``split.csv`` (image_id,label,split; multi-label: image_id,labels,split with '|' between names) of a
    labels-CSV run: resume and evaluate reuse it."""
    rows, multi = [], train_loader.samples.multi_label
    for split, loader in (("train", train_loader), ("val", val_loader)):
        samples = loader.samples
        name = (lambda label: joined(label, classes)) if multi else classes.__getitem__
        rows += [(i, name(label), split) for i, label in zip(image_ids(samples.paths, cfg["train_path"]),
                                                             samples.labels)]
    frame = pd.DataFrame(rows, columns=["image_id", "labels" if multi else "label", "split"])
    atomic_write(files.out(cfg, files.SPLIT), lambda tmp: frame.to_csv(tmp, index=False))


def is_builtin_digits(path: str) -> bool:
    """True for data/digits itself or a folder inside it (not data/digits_v2)."""
    parts = os.path.normpath(path).split(os.sep)
    return parts[:2] == BUILTIN_DIGITS.split("/")


def ensure_builtin_data(cfg: dict) -> None:
    """Write scikit-learn's digits under data/digits the first time the default config is trained."""
    paths = [cfg[k] for k in ("train_path", "val_path", "test_path") if cfg[k]]
    if all(map(is_builtin_digits, paths)) and not os.path.isdir(cfg["train_path"]):
        from easycls.datasets import make_digits  # scikit-learn's loaders: only for a first run
        make_digits(BUILTIN_DIGITS, seed=cfg["random_seed"])
        log.info("created the built-in digits dataset (scikit-learn, 1,797 images) in %s/", BUILTIN_DIGITS)
