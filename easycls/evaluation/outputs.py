"""What evaluate and predict write: pre.csv streamed batch by batch, the evaluation files, the Grad-CAM overlays."""
import csv
import glob
import io
import logging
import os
from typing import Sequence

import numpy as np
import pandas as pd
from tqdm import tqdm

from easycls.core import files
from easycls.core.checkpoints import save_json
from easycls.data.loaders import FileDataset
from easycls.data.scan import image_ids
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


def evaluation_heatmaps(model, samples, result: dict, root: str, cfg: dict) -> None:
    from easycls.evaluation.heatmaps import evaluation_picks
    index = result["index"]
    ids = image_ids([samples.paths[i] for i in index], root)
    picks = evaluation_picks(result["labels"], result["probs"], ids, model.meta.class_names, cfg["heatmap_max"])
    picks = [(index[i], k, name) for i, k, name in picks]  # positions among readable images -> dataset indices
    write_heatmaps(model, samples, picks, cfg, replaces=("wrong_*", "right_*"))


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
    classes = model.meta.class_names
    ids = image_ids(samples.paths, cfg["test_path"])
    header = ["image_id", "label", "class_name", "confidence", "status"]
    header += [f"prob_{c}" for c in classes] if cfg["save_probs"] else []
    loader = inference_loader(samples, model, cfg)
    failed = 0
    out.write(_csv_rows([header]))
    for index, probs, failures in tqdm(model.predict_batches(loader), total=len(loader), desc="predict",
                                       dynamic_ncols=True, disable=not progress):
        rows = [_prediction_row(ids[i], p, classes, cfg) for i, p in zip(index, probs)]
        rows += [[ids[i], "", "", "", f"error: {reason}"] for i, reason in failures]
        failed += len(failures)
        order = np.argsort(np.concatenate([index, [i for i, _ in failures]]), kind="stable")
        out.write(_csv_rows([rows[k] for k in order]))
    return len(ids), failed


def _prediction_row(image_id: str, probs: np.ndarray, classes, cfg: dict) -> list:
    label = int(probs.argmax())
    status = "rejected" if probs[label] < cfg["reject_threshold"] else "ok"
    row = [image_id, label, classes[label], f"{probs[label]:.6f}", status]
    return row + [f"{p:.6f}" for p in probs] if cfg["save_probs"] else row
