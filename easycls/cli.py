"""The train / evaluate / predict commands behind ``train.py``, ``evaluate.py``, ``predict.py`` and the console
scripts. Each: ``[--config FILE] [key=value ...]``; input errors print one line and exit 2, Ctrl-C exits 130.
"""
import argparse
import logging
import logging.handlers
import os
import sys
import time

import pandas as pd
import torch

from . import files
from .audit import run_audit
from .calibration import calibration_report
from .checkpoints import atomic_write, save_json
from .config import load_config, plain
from .data import class_folders, image_ids, loader_labels, scan_labelled, scan_unlabelled
from .distributed import init_from_env, shutdown
from .errors import ConfigError, DataError, exit_code
from .inference import InferenceModel, checkpoint_path, inference_loader, load_predictor
from .interrupts import TrainingInterrupted
from .labels import read_label_csv
from .metrics import format_report
from .outputs import (evaluation_heatmaps, write_errors, write_eval_outputs, write_heatmaps,
                      write_predictions)
from .plots import plot_reliability
from .tracking import CheckpointSaver

log = logging.getLogger("easycls")
BUILTIN_DIGITS = "data/digits"


def _parse(argv, prog: str, summary: str):
    parser = argparse.ArgumentParser(prog=prog, description=summary)
    parser.add_argument("--config", help="config file defining cfg = dict(...) (default: ./config.py if present)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, as Python literals")
    return parser.parse_args(argv)


def setup_logging(main_process: bool = True) -> None:
    """INFO to stdout on the main process (warnings only elsewhere), held in memory for the log file too.

    Nothing is written until :func:`start_log_file`: a run that fails on bad input leaves no folder behind.
    """
    log.handlers.clear()
    log.setLevel(logging.INFO if main_process else logging.WARNING)
    log.propagate = False
    console = logging.StreamHandler(sys.stdout)
    console.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(console)
    if main_process:
        log.addHandler(logging.handlers.MemoryHandler(capacity=10 ** 6, flushLevel=logging.CRITICAL + 1))


def start_log_file(save_dir: str, name: str) -> None:
    """Create ``save_dir`` and log to ``save_dir/name`` from now on, starting with what was held in memory."""
    held = [h for h in log.handlers if isinstance(h, logging.handlers.MemoryHandler)]
    if not held:
        return
    os.makedirs(save_dir, exist_ok=True)
    handler = logging.FileHandler(os.path.join(save_dir, name), mode="a", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    held[0].setTarget(handler)
    held[0].flush()
    log.removeHandler(held[0])
    log.addHandler(handler)


def _run(command, argv, prog: str, summary: str) -> int:
    args = _parse(argv, prog, summary)
    try:
        return exit_code(lambda: command(load_config(args.config, args.overrides)))
    except TrainingInterrupted:
        return 130
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        shutdown()


# ----------------------------------------------------------------------------- train
def is_builtin_digits(path: str) -> bool:
    """True for data/digits itself or a folder inside it (not data/digits_v2)."""
    parts = os.path.normpath(path).split(os.sep)
    return parts[:2] == BUILTIN_DIGITS.split("/")


def ensure_builtin_data(cfg: dict) -> None:
    """Write scikit-learn's digits under data/digits the first time the default config is trained."""
    paths = [cfg[k] for k in ("train_path", "val_path", "test_path") if cfg[k]]
    if all(map(is_builtin_digits, paths)) and not os.path.isdir(cfg["train_path"]):
        from .datasets import make_digits  # scikit-learn's loaders: only for a first run
        make_digits(BUILTIN_DIGITS, seed=cfg["random_seed"])
        print(f"created the built-in digits dataset (scikit-learn, 1,797 images) in {BUILTIN_DIGITS}/")


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
    from . import build, kfold
    build.preflight(cfg)
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
    from . import build  # imports timm and the training parts, which evaluate and predict do without
    from .runner import seed_all
    build.preflight(cfg)
    resume = _resume_path(cfg) if cfg["resume"] else None
    dist = init_from_env(torch.cuda.is_available() and cfg["GPU_ID"].lower() != "cpu")
    setup_logging(dist.is_main)
    seed_all(cfg["random_seed"])
    model, meta = build.build_model(cfg)  # before the data: a missing pretrained download fails at once
    if dist.is_main:
        ensure_builtin_data(cfg)
    if dist.enabled:
        torch.distributed.barrier()
    if cfg["audit"] and dist.is_main:
        start_log_file(cfg["save_dir"], files.LOGS["train"])
        splits = _audit_splits(cfg)
        if splits:
            run_audit(splits, os.path.join(cfg["save_dir"], "audit"), max(1, cfg["num_workers"]))
    train_loader, val_loader, meta.class_names = build.build_train_loaders(cfg, dist)
    runner = build.build_runner(cfg, model, meta, dist, train_labels=loader_labels(train_loader))
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
    from .lr_find import run_lr_find
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


# ----------------------------------------------------------------------------- evaluate
def evaluation_samples(cfg: dict, classes):
    """The labelled images to score and where they are: class folders under eval_path (or test_path); with
    label_type='CSV', label_path's rows under eval_path, or else the val rows of save_dir/split.csv."""
    if cfg["label_type"] == "CSV":
        if cfg["eval_path"]:
            return read_label_csv(cfg["label_path"], cfg["eval_path"], classes)[0], cfg["eval_path"]
        saved = files.out(cfg, files.SPLIT)
        if not os.path.isfile(saved):
            raise ConfigError(f"label_type='CSV' without eval_path scores the val rows of {saved}, which does not "
                              f"exist; train first or set eval_path")
        samples, split = read_label_csv(saved, cfg["train_path"], classes)
        return samples.subset([i for i, s in enumerate(split) if s == "val"]), f"{saved} (val rows)"
    path = cfg["eval_path"] or cfg["test_path"]
    try:
        return scan_labelled(path, classes), path
    except DataError as exc:
        raise DataError(f"{exc}. evaluate needs a labelled class-folder dataset: set eval_path") from None


def evaluate(cfg: dict) -> int:
    setup_logging()
    model = load_predictor(cfg)
    samples, path = evaluation_samples(cfg, model.meta.class_names)
    start_log_file(cfg["save_dir"], files.LOGS["evaluate"])
    started = time.time()
    result = model.evaluate(inference_loader(samples, model, cfg))
    metrics = {**result["metrics"], **calibration_report(result["probs"], result["labels"], model.temperature,
                                                         cfg["reject_threshold"]),
               "path": path, "seconds": round(time.time() - started, 3)}
    out = files.out(cfg, files.EVAL_DIR)
    write_eval_outputs(metrics, model.meta.class_names, out, cfg["cm_normalize"])
    write_errors(samples, result, model.meta.class_names, os.path.join(out, "errors.csv"))
    plot_reliability(result["probs"], result["labels"], model.temperature, os.path.join(out, "reliability.png"))
    if cfg["show_heatmap"]:
        evaluation_heatmaps(model, samples, result, path, cfg)
    print(f"evaluated {path}")
    print(format_report(metrics))
    print(f"wrote {out}/metrics.json, per_class.csv, confusion_matrix.csv, confusion_matrix.png, reliability.png "
          f"and errors.csv")
    from .report import write_report
    print(f"updated {write_report(cfg['save_dir'])}")
    return 0


def evaluate_main(argv=None) -> int:
    """``python evaluate.py``: accuracy, F1 and a confusion matrix on a labelled folder."""
    return _run(evaluate, argv, "evaluate.py", "Score a checkpoint on a labelled class-folder dataset.")


# ----------------------------------------------------------------------------- predict
def predict(cfg: dict) -> int:
    setup_logging()
    model = load_predictor(cfg)
    samples, others = scan_unlabelled(cfg["test_path"])
    start_log_file(cfg["save_dir"], files.LOGS["predict"])
    out_path = files.out(cfg, files.PREDICTIONS)
    written, failed = write_predictions(model, samples, cfg, out_path)
    print(f"wrote {written} rows to {out_path} ({failed} unreadable, {len(others)} non-image files skipped)")
    if cfg["show_heatmap"]:
        from .heatmaps import flat_name
        first = pd.read_csv(out_path, nrows=cfg["heatmap_max"], keep_default_na=False)
        picks = [(i, int(row.label), f"{i:03d}_{row.class_name}_{flat_name(row.image_id)}")
                 for i, row in enumerate(first.itertuples()) if row.label != ""]
        write_heatmaps(model, samples, picks, cfg, replaces=("[0-9][0-9][0-9]_*",))
    return 0


def predict_main(argv=None) -> int:
    """``python predict.py``: write ``pre.csv`` with a label for every image under ``test_path``."""
    return _run(predict, argv, "predict.py", "Label every image under test_path; write save_dir/pre.csv.")


# ----------------------------------------------------------------------------- export
def export(cfg: dict) -> int:
    from .export import export as export_model  # imports torch.onnx only when exporting
    setup_logging()
    if isinstance(cfg["model_path"], list):
        raise ConfigError("export takes one checkpoint as model_path, not a list")
    path = checkpoint_path(cfg)
    if not path.endswith((".pth", ".safetensors")):
        raise ConfigError(f"export needs a checkpoint (.pth or .safetensors), got model_path={path}")
    model = InferenceModel.from_checkpoint(path, {**cfg, "GPU_ID": "cpu", "amp": "off", "TTA": False})
    start_log_file(cfg["save_dir"], files.LOGS["export"])
    export_model(model, cfg)  # logs each file with its parity figure
    return 0


def export_main(argv=None) -> int:
    """``python export.py``: write ONNX and/or TorchScript files that run without easycls."""
    return _run(export, argv, "export.py", "Export a checkpoint to ONNX and/or TorchScript, with a parity check.")
