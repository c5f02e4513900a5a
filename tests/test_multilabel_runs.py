"""Multi-label runs of other shapes: a one-hot CSV with ASL, mixing and balanced weights; k-fold over a CSV."""
import json
import os

import numpy as np
import pandas as pd
import torch
from conftest import cfg_overrides, tiny_cfg

from easycls.cli.inference import evaluate_main, predict_main
from easycls.cli.train import train_main
from easycls.datasets import make_mosaics

DIGITS = [str(d) for d in range(10)]


def mosaic_cfg(data, out, **extra):
    extra = {"label_path": str(data / "train.csv"), **extra}
    return tiny_cfg(data, out, class_number=10, label_type="CSV",
                    train_path=str(data / "train"), val_path="", test_path=str(data / "test"),
                    target_img_size=[16, 16], batch_size=16, **extra)


def test_a_one_hot_csv_trains_with_asl_mixing_and_balanced_weights_then_evaluates_and_predicts(tmp_path, capsys):
    data = tmp_path / "data"
    make_mosaics(str(data), counts=(64, 24, 16), one_hot=True)
    cfg = mosaic_cfg(data, tmp_path / "o", epochs=2, loss="ASL-4-0-0.05", mixup=True, cutmix=True,
                     class_weight="balanced", sample_weights="balanced", show_data=True, label_smooth=0.1)
    assert train_main(cfg_overrides(cfg)) == 0
    assert "multi-label (one-hot form)" in capsys.readouterr().out
    results = pd.read_csv(tmp_path / "o" / "results.csv")
    assert np.isfinite(results[["train_loss", "val_loss", "val_mAP"]].to_numpy()).all()
    assert os.path.getsize(tmp_path / "o" / "data_preview.png") > 0
    held_out = {**cfg, "label_path": str(data / "test.csv"), "eval_path": str(data / "test")}
    assert evaluate_main(cfg_overrides(held_out)) == 0
    metrics = json.load(open(tmp_path / "o" / "eval" / "metrics.json"))
    assert metrics["n_images"] == 16 and 0 <= metrics["mAP"] <= 1
    assert predict_main(cfg_overrides(held_out)) == 0
    pre = pd.read_csv(tmp_path / "o" / "pre.csv", dtype={"labels": str}, keep_default_na=False)
    assert len(pre) == 16 and (pre["status"] == "ok").all()


def test_unreadable_files_get_an_error_row_and_no_labels(tmp_path):
    data = tmp_path / "data"
    make_mosaics(str(data), counts=(32, 16, 4))
    cfg = mosaic_cfg(data, tmp_path / "o", epochs=1)
    assert train_main(cfg_overrides(cfg)) == 0
    (data / "test" / "broken.png").write_bytes(b"not a png")
    assert predict_main(cfg_overrides(cfg)) == 0
    pre = pd.read_csv(tmp_path / "o" / "pre.csv", dtype={"labels": str}, keep_default_na=False)
    broken = pre.set_index("image_id").loc["broken.png"]
    assert broken["labels"] == "" and broken["status"].startswith("error") and broken["prob_0"] == ""
    assert len(pre) == 5


def test_k_fold_over_a_csv_stratifies_the_rarest_label_and_writes_out_of_fold_probabilities(tmp_path):
    data = tmp_path / "data"
    make_mosaics(str(data), counts=(60, 0, 4))
    table = pd.read_csv(data / "train.csv", dtype=str, keep_default_na=False)
    table["labels"] = table["labels"].str.replace("9", "").str.strip("|").str.replace("||", "|")  # drop the 9s
    table.loc[:5, "labels"] = table.loc[:5, "labels"].map(lambda names: "|".join(filter(None, [names, "9"])))
    table.drop(columns="split").to_csv(data / "cv.csv", index=False)  # six images carry the rare 9
    cfg = mosaic_cfg(data, tmp_path / "cv", label_path=str(data / "cv.csv"), val_fraction=0, k_flod=3, epochs=1)
    assert train_main(cfg_overrides(cfg)) == 0
    folds = pd.read_csv(tmp_path / "cv" / "folds.csv", dtype=str, keep_default_na=False)
    assert list(folds.columns) == ["image_id", "labels", "fold"]
    rare = folds[folds["labels"].str.contains("9")]
    assert sorted(rare["fold"].value_counts().tolist()) == [2, 2, 2]  # the rare label is spread evenly
    oof = pd.read_csv(tmp_path / "cv" / "oof.csv", dtype={"labels": str, "predicted": str}, keep_default_na=False)
    assert sorted(oof["image_id"]) == sorted(folds["image_id"])
    assert {f"prob_{d}" for d in DIGITS} <= set(oof.columns) and oof[[f"prob_{d}" for d in DIGITS]].notna().all().all()
    summary = json.load(open(tmp_path / "cv" / "cv_summary.json"))
    assert [f["fold"] for f in summary["folds"]] == [0, 1, 2] and 0 < summary["mAP_mean"] <= 1
    for fold in range(3):
        meta = torch.load(tmp_path / "cv" / f"fold{fold}" / "best.pth", weights_only=True)["meta"]
        assert meta["multi_label"] and len(meta["thresholds"]) == 10

