"""k-fold cross-validation with ``val_path=''``: every fold trained in one call, out-of-fold predictions for every
training image, a summary, and a ranking of the images whose given label is most likely wrong.

The fold of each image comes from a seeded ``StratifiedKFold`` (saved as ``folds.csv``), stratified on the class,
or for multi-label data on each image's rarest label; fold ``i`` trains into ``save_dir/fold{i}/``. Class folders
cross-validate with ``val_path=''``, a labels CSV with ``val_path=''`` and ``val_fraction=0``.

The mislabel finder (single-label) follows confident learning (Northcutt et al., 2021): an image is a label issue
when another class's out-of-fold probability reaches that class's own mean self-confidence, and images are ranked
by the out-of-fold probability of their given label, lowest first.
"""
import logging
import os
from typing import Callable, List, Tuple

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, f1_score
from sklearn.model_selection import StratifiedKFold

from easycls.core import files
from easycls.core.checkpoints import atomic_write, save_json
from easycls.core.errors import ConfigError, DataError
from easycls.data.multilabel import joined, label_matrix, read_labels, strata
from easycls.data.scan import Samples, scan_labelled
from easycls.evaluation.multilabel import multilabel_cv_summary, multilabel_oof_table
from easycls.evaluation.predictor import InferenceModel, inference_loader

log = logging.getLogger(__name__)


def fold_ids(samples: Samples, k: int, seed: int) -> np.ndarray:
    """The fold of each sample: the same split ``build.train_val_samples`` makes for ``val_fold``; multi-label
    samples are stratified on their rarest label (:func:`~easycls.data.multilabel.strata`)."""
    if samples.multi_label and len(samples.paths) < k:
        raise DataError(f"k_flod={k} needs at least {k} images; the labels have {len(samples.paths)}")
    counts = np.bincount(samples.labels, minlength=len(samples.classes)) if not samples.multi_label else [k]
    if min(counts) < k:
        raise DataError(f"k_flod={k} needs at least {k} images per class; class "
                        f"'{samples.classes[int(np.argmin(counts))]}' has {int(min(counts))}")
    folds = np.empty(len(samples.paths), dtype=int)
    splitter = StratifiedKFold(k, shuffle=True, random_state=seed)
    for fold, (_, val) in enumerate(splitter.split(samples.paths, strata(samples, k))):
        folds[val] = fold
    return folds


def fold_dir(cfg: dict, fold: int) -> str:
    return os.path.join(cfg["save_dir"], f"fold{fold}")


def prepare(cfg: dict, ids: Callable) -> Tuple[Samples, np.ndarray, List[str]]:
    """Scan ``train_path`` (or read ``label_path``), assign folds and write ``folds.csv`` (image_id, label or
    labels, fold)."""
    if cfg["label_type"] == "CSV":
        samples, split = read_labels(cfg["label_path"], cfg["train_path"], cfg["class_names"] or None,
                                     cfg["multi_label"])
        if split is not None:
            raise ConfigError(f"{cfg['label_path']} has a split column, but val_fraction=0 cross-validates in "
                              f"folds of its own; drop the column, or keep it and set val_fraction > 0")
    else:
        samples = scan_labelled(cfg["train_path"], cfg["class_names"] or None)
    folds = fold_ids(samples, cfg["k_flod"], cfg["random_seed"])
    image_id = ids(samples.paths, cfg["train_path"])
    labels = ("labels", [joined(row, samples.classes) for row in samples.labels]) if samples.multi_label else \
        ("label", [samples.classes[i] for i in samples.labels])
    table = pd.DataFrame({"image_id": image_id, labels[0]: labels[1], "fold": folds})
    os.makedirs(cfg["save_dir"], exist_ok=True)
    atomic_write(files.out(cfg, "folds.csv"), lambda tmp: table.to_csv(tmp, index=False))
    return samples, folds, image_id


def fold_config(cfg: dict, fold: int) -> dict:
    """The single-run config of one fold; ``resume=True`` resumes the folds that have a ``last.pth``."""
    resume = bool(cfg["resume"]) and os.path.isfile(os.path.join(fold_dir(cfg, fold), files.LAST))
    return {**cfg, "val_fold": fold, "save_dir": fold_dir(cfg, fold), "resume": resume}


def write_out_of_fold(cfg: dict, samples: Samples, folds: np.ndarray, image_id: List[str]) -> dict:
    """Predict each fold's val images with its ``best.pth``; write ``oof.csv``, ``cv_summary.json`` and
    ``suspect_labels.csv``; return the summary."""
    probs = np.full((len(samples.paths), len(samples.classes)), np.nan)
    thresholds = np.full_like(probs, np.nan)  # multi-label: each image's fold model's thresholds
    for fold in range(cfg["k_flod"]):
        checkpoint = os.path.join(fold_dir(cfg, fold), files.BEST)
        if not os.path.isfile(checkpoint):
            log.warning("fold %d has no best.pth; its images are left out of oof.csv", fold)
            continue
        model = InferenceModel.from_checkpoint(checkpoint, cfg)
        members = np.flatnonzero(folds == fold)
        for index, batch_probs, _ in model.predict_batches(inference_loader(samples.subset(members), model, cfg)):
            probs[members[index]] = batch_probs
        thresholds[members] = model.thresholds if model.thresholds is not None else np.nan
    done = ~np.isnan(probs).any(axis=1)
    if samples.multi_label:
        return _write_multilabel_out_of_fold(cfg, samples, folds, image_id, probs, thresholds, done)
    labels = np.asarray(samples.labels)
    oof = out_of_fold_table(image_id, folds, labels, probs, samples.classes)[done]
    atomic_write(files.out(cfg, "oof.csv"), lambda tmp: oof.to_csv(tmp, index=False))
    summary, suspects = cv_summary(oof), suspect_labels(oof, samples.classes)
    save_json(summary, files.out(cfg, "cv_summary.json"))
    atomic_write(files.out(cfg, "suspect_labels.csv"), lambda tmp: suspects.to_csv(tmp, index=False))
    log.info("cross-validation over %d folds: accuracy %.4f +- %.4f, macro F1 %.4f +- %.4f; %d images another "
             "class out-scores (%d flagged by confident learning), most suspect first, in %s", len(summary["folds"]),
             summary["accuracy_mean"], summary["accuracy_std"], summary["macro_f1_mean"], summary["macro_f1_std"],
             len(suspects), int(suspects["label_issue"].sum()), files.out(cfg, "suspect_labels.csv"))
    return summary


def _write_multilabel_out_of_fold(cfg: dict, samples: Samples, folds, image_id, probs, thresholds, done) -> dict:
    oof = multilabel_oof_table(image_id, folds, label_matrix(samples), probs, thresholds, samples.classes)[done]
    atomic_write(files.out(cfg, "oof.csv"), lambda tmp: oof.to_csv(tmp, index=False))
    summary = multilabel_cv_summary(oof, samples.classes)
    save_json(summary, files.out(cfg, "cv_summary.json"))
    log.info("cross-validation over %d folds: mAP %.4f +- %.4f, samples-F1 %.4f +- %.4f (each fold at its own "
             "thresholds); suspect_labels.csv is for single-label data and is not written", len(summary["folds"]),
             summary["mAP_mean"], summary["mAP_std"], summary["samples_f1_mean"], summary["samples_f1_std"])
    return summary


def out_of_fold_table(image_id, folds, labels, probs, classes) -> pd.DataFrame:
    """One row per image: its fold, the given and predicted label, the given label's probability, every class's."""
    predicted = np.nan_to_num(probs, nan=-1).argmax(axis=1)
    frame = pd.DataFrame({"image_id": image_id, "fold": folds, "label": labels,
                          "given_class": [classes[i] for i in labels], "predicted": predicted,
                          "predicted_class": [classes[i] for i in predicted],
                          "prob_given": probs[np.arange(len(labels)), labels]})
    return pd.concat([frame, pd.DataFrame(probs, columns=[f"prob_{c}" for c in classes])], axis=1)


def cv_summary(oof: pd.DataFrame) -> dict:
    """Accuracy and macro F1 per fold (on its own val images), with their mean and standard deviation."""
    rows = [{"fold": int(fold), "images": len(part),
             "accuracy": float(accuracy_score(part["label"], part["predicted"])),
             "macro_f1": float(f1_score(part["label"], part["predicted"], average="macro"))}
            for fold, part in oof.groupby("fold")]
    out = {"folds": rows}
    for key in ("accuracy", "macro_f1"):
        values = np.array([row[key] for row in rows])
        out[f"{key}_mean"], out[f"{key}_std"] = float(values.mean()), float(values.std())
    return out


def suspect_labels(oof: pd.DataFrame, classes: List[str]) -> pd.DataFrame:
    """Images ranked by the out-of-fold probability of their given label, lowest first, with the suggested label
    and the confident-learning flag; only images that another class out-scores."""
    probs = oof[[f"prob_{c}" for c in classes]].to_numpy()
    labels = oof["label"].to_numpy()
    given = probs[np.arange(len(labels)), labels]
    # Per-class threshold: the mean probability a class gets on the images labelled with it.
    thresholds = np.array([given[labels == k].mean() if (labels == k).any() else 1.0 for k in range(len(classes))])
    others = np.where(np.eye(len(classes), dtype=bool)[labels], -1.0, probs)
    suggested = others.argmax(axis=1)
    frame = pd.DataFrame({"image_id": oof["image_id"], "given_class": oof["given_class"],
                          "suggested_class": [classes[i] for i in suggested], "prob_given": given,
                          "prob_suggested": others.max(axis=1),
                          "label_issue": (others >= thresholds[None, :]).any(axis=1)})
    frame = frame[frame["prob_suggested"] > frame["prob_given"]]
    return frame.sort_values("prob_given", kind="stable").reset_index(drop=True)
