"""The Python API: what the command line, notebooks, sweep tools and other programs call.

    import easycls
    result = easycls.train(train_path="data/train", val_path="data/val", epochs=10, save_dir="runs/a")
    result.history.plot(x="epoch", y=["train_loss", "val_loss"])
    metrics = easycls.evaluate(save_dir="runs/a", eval_path="data/test")
    frame = easycls.predict(save_dir="runs/a", test_path="data/new")
    probs = easycls.load_model("runs/a/best.pth").predict(["a.jpg", "b.jpg"])

Each function takes ``config`` (a config file's path, a dict, or None for the defaults) and keyword overrides,
validated as ``key=value`` is on the command line: a mistake raises :class:`easycls.ConfigError` with the same
one-line message. The library prints nothing and configures no logging; it logs to the ``easycls`` logger and
writes each run's log file under ``save_dir``.
"""
import os
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Union

import pandas as pd

from easycls.config import given_values, make_config
from easycls.core import files
from easycls.core.distributed import shutdown
from easycls.evaluation import tasks
from easycls.evaluation.predictor import Predictor, checkpoint_path, load_one, load_predictor

Config = Union[str, os.PathLike, dict, None]


@dataclass
class TrainResult:
    """What a training run gave: its best epoch and monitored metric, the per-epoch history, the output files.

    For a k-fold run (``val_path=''``), ``folds`` holds each fold's result and ``cv`` the cross-validation summary
    (``cv_summary.json``); the fields above are then those of the last fold trained."""

    save_dir: str
    best_epoch: Optional[int]
    monitor: str
    best: Optional[float]
    epochs_run: int
    history: pd.DataFrame
    files: Dict[str, str]
    folds: List["TrainResult"] = field(default_factory=list)
    cv: Optional[dict] = None


def _result(summary: dict, save_dir: str) -> TrainResult:
    results = os.path.join(save_dir, files.RESULTS)
    history = pd.read_csv(results) if os.path.isfile(results) else pd.DataFrame()
    return TrainResult(save_dir, summary.get("best_epoch"), summary.get("monitor", ""), summary.get("best"),
                       summary.get("epochs_run", 0), history,
                       {k: v for k, v in summary.get("files", {}).items() if os.path.exists(v)})


def train(config: Config = None, *, progress: bool = False, started: Optional[float] = None,
          **overrides) -> TrainResult:
    """Train and validate a classifier as ``config`` and ``overrides`` say; returns a :class:`TrainResult`.

    ``progress=True`` shows the per-epoch progress bar (on stderr). ``lr_find=True`` runs the learning-rate range
    test instead and returns a result whose ``best`` is the suggested learning rate (None if the loss never fell).
    A ``time_budget`` counts from ``started``, a ``time.monotonic()`` reading: by default this call; the command
    line passes its process's start.
    """
    started = time.monotonic() if started is None else started
    from easycls.engine import training  # timm and the training parts: evaluate and predict do without them
    cfg = make_config(config, overrides)
    try:
        summary = training.train(cfg, progress, started)
    finally:
        shutdown()
    if "lr_find" in summary:
        return TrainResult(cfg["save_dir"], None, "lr_find", summary["lr_find"], 0, pd.DataFrame(), {})
    if "folds" not in summary:
        return _result(summary, cfg["save_dir"])
    folds = [_result(fold, os.path.join(cfg["save_dir"], f"fold{i}")) for i, fold in
             zip(_fold_numbers(cfg), summary["folds"])]
    last = folds[-1] if folds else TrainResult(cfg["save_dir"], None, cfg["monitor"], None, 0, pd.DataFrame(), {})
    return TrainResult(cfg["save_dir"], last.best_epoch, last.monitor, last.best, last.epochs_run, last.history,
                       last.files, folds, summary["cv"])


def _fold_numbers(cfg: dict) -> List[int]:
    return [cfg["val_fold"]] if cfg["val_fold"] is not None else list(range(cfg["start_fold"], cfg["k_fold"]))


def evaluate(config: Config = None, *, progress: bool = False, **overrides) -> dict:
    """Score ``model_path`` (default ``save_dir/best.pth``) on ``eval_path`` (default ``test_path``); writes
    ``save_dir/eval/`` and returns the metrics of its ``metrics.json`` (accuracy, macro and per-class precision,
    recall and F1, the confusion matrix, calibration, and the model file, TTA and calibration used; for a
    multi-label model mAP, per-class AP, samples-F1, micro and macro F1, exact match and Hamming loss).
    ``progress=True`` shows a progress bar (on stderr)."""
    cfg, given = _config_and_given(config, overrides)
    return tasks.evaluate(cfg, progress, given)


def predict(config: Config = None, *, output: Union[str, os.PathLike, None] = None, progress: bool = False,
            **overrides) -> pd.DataFrame:
    """Label every image under ``test_path`` (a folder, searched recursively, or one image file); returns the rows
    of ``pre.csv`` as a DataFrame (one per image: ``image_id``, ``label``, ``class_name``, ``confidence``,
    ``status`` and, with ``save_probs=True``, one probability column per class; for a multi-label model
    ``image_id``, ``labels`` (the names whose probability reaches their threshold, joined by '|'), ``status`` and
    one probability column per class). ``output`` also writes them to that CSV file; ``progress=True`` shows a
    progress bar (on stderr)."""
    cfg, given = _config_and_given(config, overrides)
    return tasks.predict(cfg, os.fspath(output) if output else None, progress, given)


def _config_and_given(config: Config, overrides: dict):
    """The validated config and the keys the caller set (config file or dict, and overrides): evaluate and predict
    say when one of those differs from what the model file defines."""
    given = given_values(config, overrides)
    return make_config(given), set(given)


def load_model(path: Union[str, os.PathLike, List[str]], device: Union[str, int, None] = None,
               **overrides) -> Predictor:
    """A trained model for your own code: a checkpoint (``.pth``), an exported ``.onnx`` or TorchScript ``.pt``,
    or a list of them (an ensemble). ``device`` is 'cpu', 'cuda', 'cuda:1' or an index (default: the first GPU
    when there is one). Its ``predict(images)`` takes paths, PIL images or numpy arrays and returns probabilities
    (a multi-label model's ``thresholds`` say which pass); overrides such as ``TTA=True``, ``calibrate=False`` or
    ``threshold=0.5`` apply as in evaluate and predict."""
    paths = [os.fspath(p) for p in path] if isinstance(path, list) else os.fspath(path)
    cfg = make_config(None, {"model_path": paths, "GPU_ID": _gpu_id(device), **overrides})
    # the file defines the network, its size and classes: the default config has nothing to say against it
    return load_predictor(cfg) if isinstance(paths, list) else load_one(checkpoint_path(cfg), cfg)


def _gpu_id(device: Union[str, int, None]) -> str:
    if device is None:
        return "0"
    text = str(device).lower()
    return "cpu" if text == "cpu" else text.replace("cuda", "").lstrip(":") or "0"


def export(config: Config = None, **overrides) -> Dict[str, float]:
    """Export ``model_path`` (default ``save_dir/best.pth``) as ``export_format`` ('onnx', 'torchscript' or 'all')
    next to it in ``save_dir``, each checked against the checkpoint; returns {file: max probability difference}."""
    return tasks.export(make_config(config, overrides))
