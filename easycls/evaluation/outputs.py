"""What evaluate and predict write: pre.csv streamed batch by batch, the evaluation files, the Grad-CAM overlays."""
import csv
import glob
import io
import logging
import os
from typing import Optional, Sequence

import numpy as np
import pandas as pd
from tqdm import tqdm

from easycls.core import files
from easycls.core.checkpoints import save_json
from easycls.core.errors import ConfigError
from easycls.data.loaders import FileDataset
from easycls.data.multilabel import joined
from easycls.data.scan import image_ids
from easycls.evaluation.multilabel import decide, plot_pr_curves
from easycls.evaluation.plots import plot_confusion
from easycls.evaluation.predictor import inference_loader

log = logging.getLogger(__name__)


def write_errors(samples, result: dict, classes, path: str) -> None:
    """``errors.csv``: every misclassified image, the most confident mistakes first."""
    probs, labels, index = result["probs"], result["labels"], result["index"]
    predicted = probs.argmax(axis=1)
    wrong = np.flatnonzero(predicted != labels)
    frame = pd.DataFrame({"path": [samples.paths[index[i]] for i in wrong],
                          "true": [classes[labels[i]] for i in wrong],
                          "predicted": [classes[predicted[i]] for i in wrong],
                          "confidence": probs[wrong, predicted[wrong]]})
    frame.sort_values("confidence", ascending=False, kind="stable").to_csv(path, index=False)


def multilabel_errors(samples, result: dict, classes, thresholds) -> pd.DataFrame:
    """Every image with a wrong label, the most confident mistake first: its true, predicted, missed and extra
    labels, the class of its surest wrong decision and that decision's confidence (p for an extra label, 1 - p for
    a missed one); ``position`` is its row in ``result``."""
    probs, labels, index = result["probs"], np.asarray(result["labels"]), result["index"]
    predicted = decide(probs, thresholds)
    wrong = predicted != labels
    sure = np.where(wrong, np.where(predicted == 1, probs, 1 - probs), -1.0)
    rows, worst = np.flatnonzero(wrong.any(axis=1)), sure.argmax(axis=1)
    names = lambda matrix: [joined(matrix[i], classes) for i in rows]  # noqa: E731
    frame = pd.DataFrame({"path": [samples.paths[index[i]] for i in rows], "true": names(labels),
                          "predicted": names(predicted), "missed": names((labels == 1) & (predicted == 0)),
                          "extra": names((predicted == 1) & (labels == 0)),
                          "worst_class": [classes[worst[i]] for i in rows], "confidence": sure[rows, worst[rows]],
                          "position": rows})
    return frame.sort_values("confidence", ascending=False, kind="stable").reset_index(drop=True)


def write_multilabel_outputs(metrics: dict, samples, result: dict, classes, out: str, thresholds) -> None:
    """``metrics.json``, ``per_class.csv``, ``pr_curves.png`` and ``errors.csv`` of a multi-label evaluation."""
    os.makedirs(out, exist_ok=True)
    save_json(metrics, os.path.join(out, "metrics.json"))
    pd.DataFrame(metrics["per_class"]).to_csv(os.path.join(out, "per_class.csv"), index=False)
    plot_pr_curves(np.asarray(result["labels"]), result["probs"], classes, os.path.join(out, "pr_curves.png"),
                   thresholds)
    errors = multilabel_errors(samples, result, classes, thresholds)
    errors.drop(columns="position").to_csv(os.path.join(out, "errors.csv"), index=False)


def evaluation_heatmaps(model, samples, result: dict, root: str, cfg: dict) -> None:
    """Grad-CAM of the worst mistakes (and, single-label, of a few right ones per class), for ``heatmap_class``
    when it names one, else for the predicted class (multi-label: the class of the surest wrong decision)."""
    from easycls.evaluation.heatmaps import evaluation_picks, flat_name
    index, classes = result["index"], model.meta.class_names
    ids = image_ids([samples.paths[i] for i in index], root)
    if model.kind.multi_label:
        errors = multilabel_errors(samples, result, classes, model.thresholds).head(cfg["heatmap_max"])
        picks = [(row.position, classes.index(row.worst_class),
                  f"wrong_{rank:03d}_{row.worst_class}_{flat_name(ids[row.position])}")
                 for rank, row in enumerate(errors.itertuples())]
    else:
        picks = evaluation_picks(result["labels"], result["probs"], ids, classes, cfg["heatmap_max"])
    chosen = heatmap_class(cfg, classes)
    picks = [(index[i], k if chosen is None else chosen, name) for i, k, name in picks]  # -> dataset indices
    write_heatmaps(model, samples, picks, cfg, replaces=("wrong_*", "right_*"))


def heatmap_class(cfg: dict, classes) -> Optional[int]:
    """The class ``heatmap_class`` names (every overlay shows where the model sees it), or None."""
    name = cfg["heatmap_class"]
    if name and name not in classes:
        raise ConfigError(f"heatmap_class {name!r} is not a class of this model; classes: {', '.join(classes)}")
    return classes.index(name) if name else None


def write_heatmaps(model, samples, picks, cfg: dict, replaces: Sequence[str]) -> None:
    """Grad-CAM overlays of ``picks`` into ``save_dir/heatmaps``, after deleting the files matching ``replaces``
    (the previous evaluate's or predict's, which would otherwise pass for this model's)."""
    from easycls.evaluation.heatmaps import save_heatmaps
    dataset = FileDataset(samples, model.meta.channels, model.meta.img_size)
    out = files.out(cfg, files.HEATMAPS_DIR)
    for pattern in replaces:
        for path in glob.glob(os.path.join(out, pattern)):
            os.remove(path)
    written = save_heatmaps(model, dataset, picks, out, cfg["heatmap_layer"])
    log.info("wrote %d Grad-CAM heatmaps to %s/", written, out)


def write_eval_outputs(metrics: dict, classes, out: str, normalize: bool) -> None:
    os.makedirs(out, exist_ok=True)
    save_json(metrics, os.path.join(out, "metrics.json"))
    pd.DataFrame(metrics["per_class"]).to_csv(os.path.join(out, "per_class.csv"), index=False)
    cm = pd.DataFrame(metrics["confusion_matrix"], index=classes, columns=classes)
    cm.index.name = "true\\predicted"
    cm.to_csv(os.path.join(out, "confusion_matrix.csv"))
    plot_confusion(metrics["confusion_matrix"], classes, os.path.join(out, "confusion_matrix.png"), normalize)


def _csv_rows(rows) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    return buffer.getvalue().encode("utf-8")


def write_predictions(model, samples, cfg: dict, out, progress: bool = True):
    """Stream ``model``'s predictions for ``samples`` as CSV into ``out`` (a path, or a binary file object) in file
    order; return (rows, unreadable).

    ``model`` is a :class:`~easycls.evaluation.predictor.Predictor` (a checkpoint, ONNX or TorchScript model)."""
    if isinstance(out, (str, os.PathLike)):
        with open(out, "wb", buffering=0) as handle:  # one write per batch: a kill leaves whole rows
            return write_predictions(model, samples, cfg, handle, progress)
    classes, kind = model.meta.class_names, model.kind
    ids = image_ids(samples.paths, cfg["test_path"])
    header = kind.prediction_header(classes, cfg)
    loader = inference_loader(samples, model, cfg)
    failed = 0
    out.write(_csv_rows([header]))
    for index, probs, failures in tqdm(model.predict_batches(loader), total=len(loader), desc="predict",
                                       dynamic_ncols=True, disable=not progress):
        rows = [kind.prediction_row(ids[i], p, classes, cfg, model.thresholds) for i, p in zip(index, probs)]
        rows += [kind.error_row(ids[i], reason, classes) for i, reason in failures]
        failed += len(failures)
        order = np.argsort(np.concatenate([index, [i for i, _ in failures]]), kind="stable")
        out.write(_csv_rows([rows[k] for k in order]))
    return len(ids), failed

