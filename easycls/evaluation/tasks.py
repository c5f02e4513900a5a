"""evaluate, predict and export from a validated config: what :mod:`easycls.api` and the command line run.

Each returns its result (metrics, a DataFrame of predictions, the exported files) and writes the files the user's
contract names under ``save_dir``; none prints.
"""
import io
import logging
import os
import time
from typing import AbstractSet, Dict, Optional

import pandas as pd

from easycls.core import files
from easycls.core.errors import ConfigError, DataError
from easycls.core.runlog import RunLog
from easycls.data.multilabel import read_labels
from easycls.data.scan import scan_labelled, scan_unlabelled
from easycls.evaluation.calibration import calibration_report
from easycls.evaluation.metrics import format_report
from easycls.evaluation.multilabel import calibration_summary
from easycls.evaluation.outputs import (
    evaluation_heatmaps,
    heatmap_class,
    write_errors,
    write_eval_outputs,
    write_heatmaps,
    write_multilabel_outputs,
    write_predictions,
)
from easycls.evaluation.paths import require, trained_config
from easycls.evaluation.plots import plot_reliability
from easycls.evaluation.predictor import InferenceModel, checkpoint_path, inference_loader, load_predictor, model_paths

log = logging.getLogger(__name__)


def evaluation_samples(cfg: dict, classes, multi_label: bool = False, run: Optional[dict] = None):
    """The labelled images to score and where they are: class folders under eval_path (or test_path); with
    label_type='CSV', label_path's rows under eval_path, or else the val rows of save_dir/split.csv. A multi-label
    model reads the CSV's labels as multi-label. ``run`` (the model's own config) lets a missing path's error name
    the value the model was trained with."""
    run = run or {}
    if cfg["label_type"] == "CSV":
        if cfg["eval_path"]:
            return read_labels(cfg["label_path"], cfg["eval_path"], classes, multi_label, True)[0], cfg["eval_path"]
        saved = files.out(cfg, files.SPLIT)
        if not os.path.isfile(saved):
            raise ConfigError(f"label_type='CSV' without eval_path scores the val rows of {saved}, which does not "
                              f"exist; train first or set eval_path")
        samples, split = read_labels(saved, cfg["train_path"], classes, multi_label, True)
        log.warning("no eval_path: scoring the val rows of %s, which chose best.pth and fitted its temperature, so "
                    "these figures are in-sample and optimistic; set eval_path to a held-out labelled folder", saved)
        return samples.subset([i for i, s in enumerate(split) if s == "val"]), f"{saved} (val rows)"
    if multi_label:
        raise ConfigError("a multi-label model is scored on a labels CSV: set label_type='CSV', label_path and "
                          "eval_path (class folders hold one label per image)")
    key = "eval_path" if cfg["eval_path"] else "test_path"
    path = require(cfg, key, run)
    example = f", such as eval_path={run['val_path']} (this model's val_path)" if run.get("val_path") else ""
    if os.path.isfile(path):
        raise DataError(f"{key} {path} is a file; evaluate needs a folder of labelled images, one sub-folder per "
                        f"class: set eval_path{example}")
    try:
        return scan_labelled(path, classes), path
    except DataError as exc:
        raise DataError(f"{exc}. evaluate needs a labelled class-folder dataset: set eval_path{example}") from None


def evaluate(cfg: dict, progress: bool = False, given: AbstractSet[str] = frozenset()) -> dict:
    """Score the model on the labelled images; write save_dir/eval/ (metrics.json, per_class.csv, errors.csv, and
    the confusion matrix and reliability.png, or for a multi-label model pr_curves.png) and refresh report.html; log
    the scores; return the metrics of metrics.json, which also say what was scored: ``path`` (eval_path, or
    test_path), ``model_path``, ``TTA`` and ``calibrate``. ``given``: the config keys the caller set (see
    :func:`load_predictor`)."""
    with RunLog() as run_log:
        model = load_predictor(cfg, given)
        samples, path = evaluation_samples(cfg, model.meta.class_names, model.meta.multi_label,
                                           trained_config(cfg, model))
        run_log.start(cfg["save_dir"], files.LOGS["evaluate"])
        started = time.time()
        result = model.evaluate(inference_loader(samples, model, cfg), progress)
        paths = model_paths(cfg)
        scored = {"path": path, "in_sample": cfg["label_type"] == "CSV" and not cfg["eval_path"],
                  "model_path": paths[0] if len(paths) == 1 else paths, "TTA": cfg["TTA"],
                  "calibrate": cfg["calibrate"], "seconds": round(time.time() - started, 3)}
        out = files.out(cfg, files.EVAL_DIR)
        write = _write_multilabel if model.kind.multi_label else _write_single_label
        metrics = write(model, samples, {**result, "path": path, "scored": scored}, out, cfg)
        log.info("evaluated %s on %s (TTA %s, calibration %s):\n%s", metrics["model_path"], path,
                 "on" if cfg["TTA"] else "off", f"temperature {model.temperature:.3f}" if cfg["calibrate"] else "off",
                 format_report(metrics))
        if cfg["show_heatmap"]:
            evaluation_heatmaps(model, samples, result, path, cfg)
        from easycls.evaluation.report import write_report  # matplotlib and the page template: only here
        write_report(cfg["save_dir"])
        return metrics


def _write_single_label(model, samples, result: dict, out: str, cfg: dict) -> dict:
    classes = model.meta.class_names
    metrics = {**result["metrics"], **calibration_report(result["probs"], result["labels"], model.temperature,
                                                         cfg["reject_threshold"]),
               **result["scored"]}
    write_eval_outputs(metrics, classes, out, cfg["cm_normalize"])
    write_errors(samples, result, classes, os.path.join(out, "errors.csv"))
    plot_reliability(result["probs"], result["labels"], model.temperature, os.path.join(out, "reliability.png"))
    return metrics


def _write_multilabel(model, samples, result: dict, out: str, cfg: dict) -> dict:
    metrics = {**result["metrics"], **calibration_summary(result["probs"], result["labels"], model.temperature),
               "threshold": cfg["threshold"], **result["scored"]}
    write_multilabel_outputs(metrics, samples, result, model.meta.class_names, out, model.thresholds)
    return metrics


def predict(cfg: dict, output: Optional[str] = None, progress: bool = False,
            given: AbstractSet[str] = frozenset()) -> pd.DataFrame:
    """Label every image under ``test_path`` (a folder, or one image file); return the rows of ``pre.csv`` as a
    DataFrame, and stream them into ``output`` too when it is a path (the command line writes save_dir/pre.csv).
    ``given``: the config keys the caller set (see :func:`load_predictor`)."""
    with RunLog() as run_log:
        model = load_predictor(cfg, given)
        samples, others = scan_unlabelled(require(cfg, "test_path", trained_config(cfg, model)))
        run_log.start(cfg["save_dir"], files.LOGS["predict"])
        target = output if output else io.BytesIO()
        if model.kind.multi_label and cfg["reject_threshold"]:
            log.warning("reject_threshold is for single-label models; a multi-label row lists the labels whose "
                        "probability reaches its threshold (see threshold)")
        written, failed = write_predictions(model, samples, cfg, target, progress)
        log.info("predicted %d images (%d unreadable, %d non-image files skipped)", written, failed, len(others))
        multi = model.kind.multi_label  # labels such as '3' or '3|7' stay text; '' when none passes
        source = output if output else io.BytesIO(target.getvalue())
        frame = pd.read_csv(source, dtype={"labels": str} if multi else None)
        if multi:
            frame["labels"] = frame["labels"].fillna("")
        if cfg["show_heatmap"]:
            _prediction_heatmaps(model, samples, frame, cfg)
        return frame


def _prediction_heatmaps(model, samples, frame: pd.DataFrame, cfg: dict) -> None:
    """Grad-CAM of the first ``heatmap_max`` images, for ``heatmap_class``, else the predicted class (multi-label:
    the most probable one)."""
    from easycls.evaluation.heatmaps import flat_name  # pytorch-grad-cam: an optional extra
    classes, chosen = model.meta.class_names, heatmap_class(cfg, model.meta.class_names)
    first = frame.head(cfg["heatmap_max"])
    first = first[first["status"].astype(str).isin(["ok", "rejected"])]
    if chosen is not None:
        targets = [chosen] * len(first)
    elif model.kind.multi_label:
        targets = first[[f"prob_{c}" for c in classes]].to_numpy().argmax(axis=1).tolist()
    else:
        targets = first["label"].astype(int).tolist()
    picks = [(i, k, f"{i:03d}_{classes[k]}_{flat_name(image_id)}")
             for i, k, image_id in zip(first.index, targets, first["image_id"])]
    write_heatmaps(model, samples, picks, cfg, replaces=("[0-9][0-9][0-9]_*",))


def export(cfg: dict) -> Dict[str, float]:
    """Export ``model_path`` (default save_dir/best.pth) as ``export_format``; return {file: parity}."""
    from easycls.evaluation.export import export as export_model  # imports torch.onnx only when exporting
    if isinstance(cfg["model_path"], list):
        raise ConfigError("export takes one checkpoint as model_path, not a list")
    path = checkpoint_path(cfg)
    if not path.endswith((".pth", ".safetensors")):
        raise ConfigError(f"export needs a checkpoint (.pth or .safetensors), got model_path={path}")
    with RunLog() as run_log:
        model = InferenceModel.from_checkpoint(path, {**cfg, "GPU_ID": "cpu", "amp": "off", "TTA": False})
        run_log.start(cfg["save_dir"], files.LOGS["export"])
        return export_model(model, cfg)  # logs each file with its parity figure
