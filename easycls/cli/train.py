"""The train command behind ``train.py`` and ``easycls-train``: one run, k-fold, or the LR range test."""
import logging
import logging.handlers
import os

import pandas as pd
import torch

from easycls.cli.common import _run, ensure_builtin_data, setup_logging, start_log_file
from easycls.core import files
from easycls.core.checkpoints import atomic_write, save_json
from easycls.core.distributed import init_from_env
from easycls.core.errors import ConfigError, DataError
from easycls.core.files import plain
from easycls.data.audit import run_audit
from easycls.data.scan import class_folders, image_ids, loader_labels
from easycls.engine.tracking import CheckpointSaver

log = logging.getLogger("easycls")



def _resume_path(cfg: dict) -> str:
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


def train(cfg: dict) -> int:
    if not cfg["val_path"] and cfg["label_type"] == "DIR":
        return train_folds(cfg)
    return train_one(cfg)


def train_folds(cfg: dict) -> int:
    """val_path='': folds start_fold..k_flod-1 (only fold val_fold when it is set), each into save_dir/fold{i}, then
    the out-of-fold predictions of every fold that has a best.pth and the suspect-label ranking."""
    from easycls.engine import builder, kfold
    builder.preflight(cfg)
    setup_logging()
    if int(os.environ.get("RANK", "0")) == 0:
        ensure_builtin_data(cfg)
    samples, folds, ids = kfold.prepare(cfg, image_ids)
    chosen = [cfg["val_fold"]] if cfg["val_fold"] is not None else range(cfg["start_fold"], cfg["k_flod"])
    for fold in chosen:
        print(f"fold {fold} of folds {chosen[0]}..{chosen[-1]} -> {kfold.fold_dir(cfg, fold)}")
        code = train_one(kfold.fold_config(cfg, fold))
        if code:
            return code
    if int(os.environ.get("RANK", "0")) != 0:
        return 0
    setup_logging()
    start_log_file(cfg["save_dir"], files.LOGS["kfold"])
    return kfold.write_out_of_fold(cfg, samples, folds, ids)


def train_one(cfg: dict) -> int:
    """One training run (one fold when val_path is '')."""
    from easycls.engine import builder  # imports timm and the training parts, which evaluate and predict do without
    from easycls.engine.rng import seed_all
    builder.preflight(cfg)
    resume = _resume_path(cfg) if cfg["resume"] else None
    dist = init_from_env(torch.cuda.is_available() and cfg["GPU_ID"].lower() != "cpu")
    setup_logging(dist.is_main)
    seed_all(cfg["random_seed"], dist.rank)
    model, meta = builder.build_model(cfg)  # before the data: a missing pretrained download fails at once
    if dist.is_main:
        ensure_builtin_data(cfg)
    if dist.enabled:
        torch.distributed.barrier()
    if cfg["audit"] and dist.is_main:
        start_log_file(cfg["save_dir"], files.LOGS["train"])
        splits = _audit_splits(cfg)
        if splits:
            run_audit(splits, os.path.join(cfg["save_dir"], "audit"), max(1, cfg["num_workers"]))
    train_loader, val_loader, meta.class_names = builder.build_train_loaders(cfg, dist)
    runner = builder.build_runner(cfg, model, meta, dist, train_labels=loader_labels(train_loader))
    if cfg["lr_find"]:
        return _lr_find(runner, train_loader, cfg, dist)
    if resume:
        runner.resume(resume)
        if runner.finished:
            done = runner.summary()
            log.info("this run already finished after epoch %d (best epoch %d, %s %.4f); nothing to do",
                     done["epochs_run"], done["best_epoch"], done["monitor"], done["best"])
            return 0
    if dist.is_main:
        start_log_file(cfg["save_dir"], files.LOGS["train"])
        if not resume:
            CheckpointSaver(cfg["save_dir"]).remove_stale()
        _save_config(cfg)
        _save_data_summary(cfg, meta.class_names, train_loader, val_loader)
        if cfg["label_type"] == "CSV":
            _save_split(cfg, meta.class_names, train_loader, val_loader)
    log.info("model %s on %s%s, %d epochs, effective batch size %d (%d per process x %d%s)", meta.model_name,
             runner.device, f" x{dist.world} processes" if dist.enabled else "", cfg["epochs"],
             cfg["batch_size"] * dist.world * cfg["accumulate_steps"], cfg["batch_size"], dist.world,
             f" x {cfg['accumulate_steps']} accumulated" if cfg["accumulate_steps"] > 1 else "")
    summary = runner.train(train_loader, val_loader)
    if dist.is_main:
        _print_summary(summary)
    return 0


def _lr_find(runner, loader, cfg: dict, dist) -> int:
    """lr_find=True: the range test instead of training; no checkpoint is written."""
    from easycls.engine.lr_find import run_lr_find
    if dist.enabled:
        raise ConfigError("lr_find=True runs in one process; start it without torchrun")
    start_log_file(cfg["save_dir"], files.LOGS["train"])
    lr = run_lr_find(runner, loader, cfg)
    if lr is None:
        print("lr_find: the loss never fell; try a smaller batch_size or check the data")
        return 0
    print(f"suggested learning_rate: {lr:.1e} (trained nothing). To use it:\n"
          f"    python train.py learning_rate={lr:.2g}    (or set learning_rate={lr:.2g} in your config)")
    return 0


def _audit_splits(cfg: dict) -> dict:
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
    """``data.json``: images per class in train and val (per rank under torchrun: this rank's share)."""
    counts = {split: {name: 0 for name in classes} for split in ("train", "val")}
    for split, loader in (("train", train_loader), ("val", val_loader)):
        for label in loader_labels(loader):
            counts[split][classes[label]] += 1
    save_json({"class_counts": counts}, files.out(cfg, files.DATA_JSON))


def _save_split(cfg: dict, classes, train_loader, val_loader) -> None:
    """``split.csv`` (image_id,label,split) of a labels-CSV run: resume and evaluate reuse it."""
    rows = []
    for split, loader in (("train", train_loader), ("val", val_loader)):
        samples = loader.samples
        rows += [(i, classes[label], split) for i, label in zip(image_ids(samples.paths, cfg["train_path"]),
                                                                samples.labels)]
    frame = pd.DataFrame(rows, columns=["image_id", "label", "split"])
    atomic_write(files.out(cfg, files.SPLIT), lambda tmp: frame.to_csv(tmp, index=False))


def _save_config(cfg: dict) -> None:
    if cfg["cfg_verbose"]:
        log.info("config:\n%s", "\n".join(f"  {k} = {v!r}" for k, v in cfg.items()))
    save_json(plain(cfg), files.out(cfg, files.CONFIG_JSON))


def _print_summary(summary: dict) -> None:
    if summary["best"] is not None:
        print(f"best epoch {summary['best_epoch']} of {summary['epochs_run']}: "
              f"{summary['monitor']} = {summary['best']:.4f}")
    for name, path in summary["files"].items():
        if os.path.exists(path):
            print(f"  {name:<17} {path}")


def train_main(argv=None) -> int:
    """``python train.py``: train and validate a classifier."""
    return _run(train, argv, "train.py", "Train an image classifier on class folders.")
