"""The train / evaluate / predict commands behind ``train.py``, ``evaluate.py``, ``predict.py`` and the console
scripts. Each: ``[--config FILE] [key=value ...]``; input errors print one line and exit 2, Ctrl-C exits 130.
"""
import argparse
import csv
import io
import logging
import os
import sys

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from . import build
from .audit import run_audit
from .checkpoints import save_json
from .config import load_config
from .data import class_folders, scan_labelled, scan_unlabelled
from .datasets import make_digits
from .distributed import init_from_env, shutdown
from .errors import ConfigError, DataError, exit_code
from .metrics import format_report
from .plots import plot_confusion
from .runner import TrainingInterrupted

log = logging.getLogger("easycls")
BUILTIN_DIGITS = "data/digits"


def _parse(argv, prog: str, summary: str):
    parser = argparse.ArgumentParser(prog=prog, description=summary)
    parser.add_argument("--config", help="config file defining cfg = dict(...) (default: ./config.py if present)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, as Python literals")
    return parser.parse_args(argv)


def setup_logging(save_dir: str, log_name: str, main_process: bool = True) -> None:
    """INFO to stdout and to ``save_dir/log_name`` on the main process; warnings only elsewhere."""
    log.handlers.clear()
    log.setLevel(logging.INFO if main_process else logging.WARNING)
    log.propagate = False
    console = logging.StreamHandler(sys.stdout)
    console.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(console)
    if main_process:
        os.makedirs(save_dir, exist_ok=True)
        handler = logging.FileHandler(os.path.join(save_dir, log_name), mode="a", encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
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
def ensure_builtin_data(cfg: dict) -> None:
    """Write scikit-learn's digits under data/digits the first time the default config is trained."""
    paths = (cfg["train_path"], cfg["val_path"], cfg["test_path"])
    builtin = all(os.path.normpath(p).startswith(BUILTIN_DIGITS) for p in paths if p)
    if builtin and not os.path.isdir(cfg["train_path"]):
        make_digits(BUILTIN_DIGITS, seed=cfg["random_seed"])
        print(f"created the built-in digits dataset (scikit-learn, 1,797 images) in {BUILTIN_DIGITS}/")


def _resume_path(cfg: dict) -> str:
    if isinstance(cfg["resume"], str):
        path = cfg["resume"]
    else:
        candidates = [os.path.join(cfg["save_dir"], n) for n in ("last.pth", "interrupted.pth")]
        candidates = [p for p in candidates if os.path.isfile(p)]
        if not candidates:
            raise ConfigError(f"resume=True but {cfg['save_dir']} has no last.pth or interrupted.pth")
        path = max(candidates, key=os.path.getmtime)
    if not os.path.isfile(path):
        raise ConfigError(f"resume checkpoint not found: {path}")
    return path


def train(cfg: dict) -> int:
    device_is_cuda = torch.cuda.is_available() and cfg["GPU_ID"].lower() != "cpu"
    dist = init_from_env(device_is_cuda)
    setup_logging(cfg["save_dir"], "train.log", dist.is_main)
    if dist.is_main:
        ensure_builtin_data(cfg)
    if dist.enabled:
        torch.distributed.barrier()
    if cfg["audit"] and dist.is_main:
        run_audit(_audit_splits(cfg), os.path.join(cfg["save_dir"], "audit"), max(1, cfg["num_workers"]))
    torch.manual_seed(cfg["random_seed"])
    train_loader, val_loader, classes = build.build_train_loaders(cfg, dist)
    model, meta = build.build_model(cfg, classes)
    runner = build.ModelRunner(model, meta, cfg, build.select_device(cfg, dist), dist)
    if cfg["resume"]:
        runner.resume(_resume_path(cfg))
        if runner.finished:
            log.info("this run already finished after epoch %d (best epoch %d, %s %.4f); nothing to do",
                     len(runner.history), runner.stopper.best_epoch + 1, runner.monitor, runner.stopper.best)
            return 0
    elif dist.is_main:
        runner.saver.remove_stale()
    if dist.is_main:
        _save_config(cfg)
    log.info("model %s on %s%s, %d epochs, effective batch size %d (%d per process x %d)", meta["model_name"],
             runner.device, f" x{dist.world} processes" if dist.enabled else "", cfg["epochs"],
             cfg["batch_size"] * dist.world, cfg["batch_size"], dist.world)
    summary = runner.train(train_loader, val_loader)
    if dist.is_main:
        _print_summary(summary)
    return 0


def _audit_splits(cfg: dict) -> dict:
    """The labelled splits of this config (test_path only when it has class folders)."""
    splits = {"train": cfg["train_path"]}
    for split in ("val", "test"):
        path = cfg[f"{split}_path"]
        try:
            if path and class_folders(path):
                splits[split] = path
        except DataError:
            log.info("audit: %s_path %s is not a class-folder dataset; not audited", split, path)
    return splits


def _save_config(cfg: dict) -> None:
    if cfg["cfg_verbose"]:
        log.info("config:\n%s", "\n".join(f"  {k} = {v!r}" for k, v in cfg.items()))
    save_json(cfg, os.path.join(cfg["save_dir"], "config.json"))


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
def evaluate(cfg: dict) -> int:
    setup_logging(cfg["save_dir"], "evaluate.log")
    runner = build.runner_for_inference(cfg)
    path = cfg["eval_path"] or cfg["test_path"]
    try:
        samples = scan_labelled(path, runner.meta["class_names"])
    except DataError as exc:
        raise DataError(f"{exc}. evaluate needs a labelled class-folder dataset: set eval_path") from None
    result = runner.evaluate(build.inference_loader(samples, runner))
    out = os.path.join(cfg["save_dir"], "eval")
    write_eval_outputs(result["metrics"], runner.meta["class_names"], out, cfg["cm_normalize"])
    print(f"evaluated {path}")
    print(format_report(result["metrics"]))
    print(f"wrote {out}/metrics.json, per_class.csv, confusion_matrix.csv and confusion_matrix.png")
    return 0


def write_eval_outputs(metrics: dict, classes, out: str, normalize: bool) -> None:
    os.makedirs(out, exist_ok=True)
    save_json(metrics, os.path.join(out, "metrics.json"))
    pd.DataFrame(metrics["per_class"]).to_csv(os.path.join(out, "per_class.csv"), index=False)
    cm = pd.DataFrame(metrics["confusion_matrix"], index=classes, columns=classes)
    cm.index.name = "true\\predicted"
    cm.to_csv(os.path.join(out, "confusion_matrix.csv"))
    plot_confusion(metrics["confusion_matrix"], classes, os.path.join(out, "confusion_matrix.png"), normalize)


def evaluate_main(argv=None) -> int:
    """``python evaluate.py``: accuracy, F1 and a confusion matrix on a labelled folder."""
    return _run(evaluate, argv, "evaluate.py", "Score a checkpoint on a labelled class-folder dataset.")


# ----------------------------------------------------------------------------- predict
def _csv_rows(rows) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    return buffer.getvalue().encode("utf-8")


def predict(cfg: dict) -> int:
    setup_logging(cfg["save_dir"], "predict.log")
    runner = build.runner_for_inference(cfg)
    samples, others = scan_unlabelled(cfg["test_path"])
    out_path = os.path.join(cfg["save_dir"], "pre.csv")
    written, failed = write_predictions(runner, samples, cfg, out_path)
    print(f"wrote {written} rows to {out_path} ({failed} unreadable, {len(others)} non-image files skipped)")
    return 0


def image_ids(paths, root: str):
    """Paths relative to ``root`` with forward slashes (the paths come from walking ``root``)."""
    prefix = os.path.join(root, "")
    return [(p[len(prefix):] if p.startswith(prefix) else os.path.relpath(p, root)).replace(os.sep, "/")
            for p in paths]


def write_predictions(runner, samples, cfg: dict, out_path: str, progress: bool = True):
    """Stream predictions for ``samples`` into ``out_path`` in file order; return (rows, unreadable)."""
    classes = runner.meta["class_names"]
    ids = image_ids(samples.paths, cfg["test_path"])
    header = ["image_id", "label", "class_name", "confidence", "status"]
    header += [f"prob_{c}" for c in classes] if cfg["save_probs"] else []
    loader = build.inference_loader(samples, runner)
    failed = 0
    with open(out_path, "wb", buffering=0) as handle:  # one write per batch: a kill leaves whole rows
        handle.write(_csv_rows([header]))
        for index, probs, failures in tqdm(runner.predict(loader), total=len(loader), desc="predict",
                                           dynamic_ncols=True, disable=not progress):
            rows = [_prediction_row(ids[i], p, classes, cfg["save_probs"]) for i, p in zip(index, probs)]
            rows += [[ids[i], "", "", "", f"error: {reason}"] for i, reason in failures]
            for i, reason in failures:
                log.warning("could not read %s: %s", samples.paths[i], reason)
            failed += len(failures)
            order = np.argsort(np.concatenate([index, [i for i, _ in failures]]), kind="stable")
            handle.write(_csv_rows([rows[k] for k in order]))
    return len(ids), failed


def _prediction_row(image_id: str, probs: np.ndarray, classes, save_probs: bool) -> list:
    label = int(probs.argmax())
    row = [image_id, label, classes[label], f"{probs[label]:.6f}", "ok"]
    return row + [f"{p:.6f}" for p in probs] if save_probs else row


def predict_main(argv=None) -> int:
    """``python predict.py``: write ``pre.csv`` with a label for every image under ``test_path``."""
    return _run(predict, argv, "predict.py", "Label every image under test_path; write save_dir/pre.csv.")
