"""Multi-label runs from the command line on tiny mosaics of real digits: thresholds tuned on val and saved, honest
metrics that pre.csv reproduces, a global threshold, export, ensembles, Grad-CAM per label and the report."""
import json
import os

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import cfg_overrides, tiny_cfg
from sklearn.metrics import f1_score

import easycls
from easycls.cli.inference import evaluate_main, export_main, predict_main
from easycls.cli.train import train_main
from easycls.datasets import make_mosaics
from easycls.evaluation.multilabel import tune_thresholds

DIGITS = [str(d) for d in range(10)]


def mosaic_cfg(data, out, **extra):
    extra = {"label_path": str(data / "train.csv"), **extra}
    return tiny_cfg(data, out, class_number=10, label_type="CSV",
                    train_path=str(data / "train"), val_path="", test_path=str(data / "test"),
                    target_img_size=[16, 16], epochs=3, batch_size=16, **extra)


def held_out(cfg, **extra):
    """The same run's config for evaluate and predict on the held-out mosaics."""
    data = os.path.dirname(cfg["train_path"])
    return {**cfg, "label_path": os.path.join(data, "test.csv"), "eval_path": cfg["test_path"], **extra}


def truth(csv):
    table = pd.read_csv(csv, dtype=str, keep_default_na=False).set_index("image_id")
    return table["labels"].map(lambda names: [int(d in names.split("|")) for d in DIGITS])


def rows(series, index):
    return np.array([series[i] for i in index])


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One multi-label run (the '|'-separated form, BCE by default), trained once."""
    root = tmp_path_factory.mktemp("mosaics")
    make_mosaics(str(root / "data"), counts=(96, 32, 32))
    cfg = mosaic_cfg(root / "data", root / "out")
    assert train_main(cfg_overrides(cfg)) == 0
    return cfg


def test_training_tunes_each_threshold_on_val_and_saves_it_with_the_model(run):
    out = run["save_dir"]
    state = torch.load(os.path.join(out, "best.pth"), weights_only=True)
    meta = state["meta"]
    assert meta["multi_label"] and len(meta["thresholds"]) == 10
    assert state["config"]["monitor"] == "val_mAP"
    results = pd.read_csv(os.path.join(out, "results.csv"))
    assert {"val_mAP", "val_f1", "val_acc"} <= set(results.columns)
    assert results["val_mAP"].idxmax() == state["epoch"]  # best.pth is the epoch of the best mAP
    split = pd.read_csv(os.path.join(out, "split.csv"), dtype=str, keep_default_na=False)
    assert list(split.columns) == ["image_id", "labels", "split"] and split["labels"].str.contains("|").any()
    val = split[split["split"] == "val"]
    model = easycls.load_model(os.path.join(out, "best.pth"), device="cpu")
    probs = model.predict([os.path.join(run["train_path"], i) for i in val["image_id"]])
    targets = rows(truth(os.path.join(out, "split.csv")), val["image_id"])
    assert meta["thresholds"] == pytest.approx(tune_thresholds(targets, probs), abs=1e-5)
    counts = json.load(open(os.path.join(out, "data.json")))["class_counts"]["val"]
    assert [counts[d] for d in DIGITS] == targets.sum(axis=0).tolist()


def test_evaluate_reports_honest_metrics_that_pre_csv_reproduces(run, capsys):
    assert evaluate_main(cfg_overrides(held_out(run))) == 0
    console = capsys.readouterr().out
    assert "mAP:" in console and "samples-F1:" in console and "accuracy" not in console
    out = os.path.join(run["save_dir"], "eval")
    metrics = json.load(open(os.path.join(out, "metrics.json")))
    assert {"mAP", "samples_f1", "exact_match", "hamming_loss", "micro", "macro", "per_class"} <= set(metrics)
    assert "accuracy" not in metrics
    per_class = pd.read_csv(os.path.join(out, "per_class.csv"))
    assert list(per_class.columns) == ["class", "AP", "precision", "recall", "f1", "support", "threshold"]
    assert os.path.getsize(os.path.join(out, "pr_curves.png")) > 0
    assert predict_main(cfg_overrides(held_out(run))) == 0
    pre = pd.read_csv(os.path.join(run["save_dir"], "pre.csv"), dtype={"labels": str}, keep_default_na=False)
    assert list(pre.columns) == ["image_id", "labels", "status"] + [f"prob_{d}" for d in DIGITS]
    predicted = np.array([[int(d in names.split("|")) for d in DIGITS] for names in pre["labels"]])
    targets = rows(truth(os.path.join(os.path.dirname(run["train_path"]), "test.csv")), pre["image_id"])
    assert metrics["samples_f1"] == pytest.approx(f1_score(targets, predicted, average="samples", zero_division=1))
    thresholds = torch.load(os.path.join(run["save_dir"], "best.pth"), weights_only=True)["meta"]["thresholds"]
    probs = pre[[f"prob_{d}" for d in DIGITS]].to_numpy()
    assert (predicted == (probs >= np.array(thresholds) - 1e-6)).all()  # the checkpoint's thresholds applied
    assert "mAP" in open(os.path.join(run["save_dir"], "report.html")).read()


def test_a_number_overrides_the_tuned_thresholds(run):
    frame = easycls.predict(held_out(run, threshold=0.5))
    probs = frame[[f"prob_{d}" for d in DIGITS]].to_numpy()
    expected = ["|".join(d for d, p in zip(DIGITS, row) if p >= 0.5) for row in probs]
    assert frame["labels"].tolist() == expected


def test_the_exported_graphs_carry_and_apply_the_thresholds(run):
    pytest.importorskip("onnxruntime")
    assert export_main(cfg_overrides({**run, "export_format": "all"})) == 0
    checkpoint = easycls.predict(held_out(run))
    thresholds = torch.load(os.path.join(run["save_dir"], "best.pth"), weights_only=True)["meta"]["thresholds"]
    for name in ("model.onnx", "model.pt"):
        path = os.path.join(run["save_dir"], name)
        exported = easycls.load_model(path, device="cpu")
        assert exported.meta.multi_label and exported.thresholds == pytest.approx(thresholds)
        frame = easycls.predict(held_out(run, model_path=path))
        assert frame["labels"].tolist() == checkpoint["labels"].tolist()
        probs = [frame[[f"prob_{d}" for d in DIGITS]].to_numpy() for frame in (frame, checkpoint)]
        assert np.abs(probs[0] - probs[1]).max() < 1e-4


def test_an_ensemble_averages_the_members_probabilities_and_thresholds(run):
    members = [os.path.join(run["save_dir"], name) for name in ("best.pth", "last.pth")]
    images = [os.path.join(run["test_path"], name) for name in sorted(os.listdir(run["test_path"]))[:8]]
    ensemble = easycls.load_model(members, device="cpu")
    alone = [easycls.load_model(path, device="cpu") for path in members]
    assert np.allclose(ensemble.predict(images), np.mean([m.predict(images) for m in alone], axis=0), atol=1e-6)
    assert np.allclose(ensemble.thresholds, np.mean([m.thresholds for m in alone], axis=0))


def test_grad_cam_targets_the_label_heatmap_class_names(run):
    pytest.importorskip("pytorch_grad_cam")
    heat = os.path.join(run["save_dir"], "heatmaps")
    pictures = {}
    for digit in ("3", "7"):
        assert predict_main(cfg_overrides(held_out(run, show_heatmap=True, heatmap_max=2, heatmap_class=digit))) == 0
        names = sorted(os.listdir(heat))
        assert len(names) == 2 and all(f"_{digit}_" in n for n in names), names
        pictures[digit] = open(os.path.join(heat, names[0]), "rb").read()
    assert pictures["3"] != pictures["7"]
    assert evaluate_main(cfg_overrides(held_out(run, show_heatmap=True, heatmap_max=2))) == 0
    assert any(n.startswith("wrong_000_") for n in os.listdir(heat))
