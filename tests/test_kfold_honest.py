"""Honest k-fold estimates (issue 21, item 3): a fold's held-out images choose nothing, exact duplicates share a
fold, and one function assigns the folds that ``val_fold`` and the k-fold run both use."""
import json
import os
import shutil

import numpy as np
import pandas as pd
import pytest
from conftest import cfg_overrides, tiny_cfg, write_images
from PIL import Image

from easycls.cli.train import train_main
from easycls.config.loading import validate
from easycls.config.schema import defaults
from easycls.data.audit import fingerprints
from easycls.data.scan import image_ids, scan_labelled
from easycls.engine import builder, kfold
from easycls.engine.hooks import records

CLASSES, IMAGES, FOLDS = 2, 100, 10


def random_label_folder(root, count=IMAGES, classes=CLASSES, seed=0):
    """Noise images whose (balanced) labels are drawn at random: nothing about them can be learnt."""
    rng = np.random.default_rng(seed)
    for i, label in enumerate(rng.permutation(np.arange(count) % classes)):
        os.makedirs(os.path.join(root, f"c{label}"), exist_ok=True)
        image = Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8), "L")
        image.save(os.path.join(root, f"c{label}", f"{i:03d}.png"))
    return root


def test_out_of_fold_accuracy_with_random_labels_is_chance(tmp_path, monkeypatch):
    """Before the fix each fold kept the epoch that scored best on its own held-out images: over 12 epochs of a
    model that memorises noise, that choice alone lifted out-of-fold accuracy to 0.70 here (0.65-0.73 over data
    seeds 0-2); after it, 0.54 here (0.48 and 0.48 for seeds 1 and 2)."""
    monkeypatch.setattr(records, "plot_curves", lambda *args, **kwargs: None)  # 85% of a tiny epoch, not tested here
    data = tmp_path / "data"
    random_label_folder(str(data / "train"))
    cfg = tiny_cfg(data, tmp_path / "out", val_path="", k_flod=FOLDS, epochs=12, val_fold=None,
                   class_number=CLASSES, target_img_size=[8, 8], early_stop_patient=0, learning_rate=0.05)
    assert train_main(cfg_overrides(cfg)) == 0
    oof = pd.read_csv(tmp_path / "out" / "oof.csv")
    accuracy = float((oof["label"] == oof["predicted"]).mean())
    summary = json.loads((tmp_path / "out" / "cv_summary.json").read_text())
    assert len(oof) == IMAGES and summary["accuracy_mean"] == pytest.approx(accuracy)
    # Out-of-sample, the hits are Binomial(100, 1/2): 0.5 +- 0.05; 0.62 is 2.4 standard deviations above.
    assert abs(accuracy - 1 / CLASSES) <= 0.12, accuracy


def folds_cfg(data, out, **extra):
    return validate({**defaults(), **tiny_cfg(data, out, val_path="", k_flod=3, val_fold=0, **extra)})


@pytest.fixture
def twins(tmp_path):
    """Bars data in which 6 images have an exact copy under another name, one of them filed under another class."""
    train = tmp_path / "data" / "train"
    write_images(str(train), per_class=12)
    pairs = [(f"{name}/{i:03d}.png", f"{name}/copy_{i:03d}.png") for name in ("left", "middle") for i in range(3)]
    pairs[-1] = ("middle/002.png", "right/copy_of_middle.png")  # the same picture with two labels
    for source, copy in pairs:
        shutil.copy(train / source, train / copy)
    return tmp_path, pairs


def test_exact_duplicates_share_a_fold_and_never_train_the_model_that_scores_their_twin(twins):
    root, pairs = twins
    cfg = folds_cfg(root / "data", root / "out")
    samples = scan_labelled(cfg["train_path"])
    folds = kfold.fold_ids(samples, 3, cfg["random_seed"], kfold.duplicate_groups(samples))
    fold_of = dict(zip(image_ids(samples.paths, cfg["train_path"]), folds))
    assert all(fold_of[a] == fold_of[b] for a, b in pairs)
    for fold in range(3):
        train, val = builder.train_val_samples({**cfg, "val_fold": fold})
        held_out = [p for p, f in zip(samples.paths, folds) if f == fold]
        assert set(fingerprints(train.paths + val.paths)).isdisjoint(fingerprints(held_out))


def test_val_fold_and_the_k_fold_run_use_the_same_folds_and_hold_the_fold_out(twins):
    root, _ = twins
    cfg = folds_cfg(root / "data", root / "out", val_fraction=0.25)
    _, folds, ids = kfold.prepare(cfg, image_ids)
    table = pd.read_csv(root / "out" / "folds.csv")
    assert table["image_id"].tolist() == ids and table["fold"].tolist() == folds.tolist()
    for fold in range(3):
        train, val = builder.train_val_samples({**cfg, "val_fold": fold})
        trained_on = image_ids(train.paths + val.paths, cfg["train_path"])
        assert sorted(trained_on) == sorted(table["image_id"][table["fold"] != fold])
        # val (which picks best.pth and the temperature) is about a quarter of the fold's training part
        assert abs(len(val.paths) / len(trained_on) - 0.25) < 0.05 and set(val.labels) == {0, 1, 2}


def test_a_labels_csv_cross_validates_with_its_held_out_fold_choosing_nothing(twins):
    """val_fraction=0 on a labels CSV: fold i's checkpoint was chosen on fold i itself before the fix."""
    root, _ = twins
    train_path = root / "data" / "train"
    ids = image_ids(scan_labelled(str(train_path)).paths, str(train_path))
    pd.DataFrame({"image_id": ids, "label": [i.split("/")[0] for i in ids]}).to_csv(root / "labels.csv", index=False)
    cfg = folds_cfg(root / "data", root / "out", label_type="CSV", label_path=str(root / "labels.csv"),
                    val_fraction=0)
    _, folds, ids = kfold.prepare(cfg, image_ids)
    for fold in range(3):
        train, val = builder.train_val_samples({**cfg, "val_fold": fold})
        trained_on = image_ids(train.paths + val.paths, str(train_path))
        assert sorted(trained_on) == sorted(i for i, f in zip(ids, folds) if f != fold)
        assert not set(image_ids(train.paths, str(train_path))) & set(image_ids(val.paths, str(train_path)))
        # 1/10 asked; 8 twin-aware units per class allow at most 6 parts here, so about 1/6 of 30 images
        assert 0.1 <= len(val.paths) / len(trained_on) <= 0.2
