"""sample_weights and class_weight='balanced': the sampler's draws, the CSV's errors, and what a model learns."""
import os

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import cfg_overrides, tiny_cfg
from test_config import SEED_EXAMPLE

from easycls.cli.inference import predict_main
from easycls.cli.train import train_main
from easycls.core.errors import DataError
from easycls.data.labels import sample_weights
from easycls.data.loaders import EpochSampler
from easycls.data.scan import Samples


def test_balanced_weights_draw_each_class_about_equally_and_zero_never():
    labels = [0] * 90 + [1] * 9 + [2] * 1
    weights = sample_weights(Samples([f"x/{i}.png" for i in range(100)], labels, ["a", "b", "c"]), "balanced", "x")
    drawn = [labels[i] for epoch in range(20) for i in _epoch(EpochSampler(100, True, weights=weights), epoch)]
    counts = np.bincount(drawn, minlength=3) / len(drawn)
    assert np.allclose(counts, 1 / 3, atol=0.05) and len(drawn) == 20 * 100
    zero = EpochSampler(4, True, weights=[1.0, 0.0, 1.0, 0.0])
    assert set(i for epoch in range(10) for i in _epoch(zero, epoch)) == {0, 2}


def _epoch(sampler, epoch):
    sampler.set_epoch(epoch)
    return list(sampler)


def test_each_rank_draws_its_own_seeded_share():
    ranks = [EpochSampler(10, True, seed=3, rank=r, world=2, weights=[1.0] * 10) for r in range(2)]
    first, second = (_epoch(s, 1) for s in ranks)
    assert len(first) == len(second) == 5 and first != second
    assert first == _epoch(EpochSampler(10, True, seed=3, rank=0, world=2, weights=[1.0] * 10), 1)


@pytest.mark.parametrize("rows,message", [
    ("image_id,weight\na.png,1\nb.png,-1\n", "not numbers >= 0: b.png"),
    ("image_id,weight\na.png,1\nb.png,nan\n", "not numbers >= 0: b.png"),
    ("image_id,weight\na.png,1\nb.png,1\nc.png,1\n", "ids not under x: c.png"),
    ("image_id,weight\na.png,1\n", "no row for these images: b.png"),
    ("image_id,weight\na.png,1\na.png,2\nb.png,1\n", "duplicated ids: a.png"),
    ("id,w\na.png,1\n", "must have the columns image_id,weight"),
])
def test_weights_csv_errors_name_the_rows(tmp_path, rows, message):
    (tmp_path / "w.csv").write_text(rows)
    with pytest.raises(DataError, match=message):
        sample_weights(Samples(["x/a.png", "x/b.png"], [0, 1], ["a", "b"]), str(tmp_path / "w.csv"), "x")


@pytest.mark.parametrize("cache", ["ram", "none"])
def test_weights_for_two_classes_make_a_model_that_predicts_only_those(tiny_data, tmp_path, cache):
    ids = sorted(f"{c}/{f}" for c in os.listdir(tiny_data / "train") for f in os.listdir(tiny_data / "train" / c))
    pd.DataFrame({"image_id": ids, "weight": [0.0 if i.startswith("right/") else 1.0 for i in ids]}) \
        .to_csv(tmp_path / "w.csv", index=False)
    cfg = tiny_cfg(tiny_data, tmp_path / "o", epochs=4, cache=cache, sample_weights=str(tmp_path / "w.csv"))
    assert train_main(cfg_overrides(cfg)) == 0
    assert predict_main(cfg_overrides(cfg)) == 0
    assert set(pd.read_csv(tmp_path / "o" / "pre.csv")["class_name"]) <= {"left", "middle"}


def test_class_weight_balanced_follows_scikit_learn(tiny_data, tmp_path):
    from easycls.engine import builder
    os.remove(tiny_data / "train" / "left" / "000.png")
    cfg = tiny_cfg(tiny_data, tmp_path / "o", class_weight="balanced")
    weights = builder.class_weights({**cfg, "class_number": 3}, [0] * 15 + [1] * 16 + [2] * 16)
    assert weights == pytest.approx([47 / (3 * 15), 47 / (3 * 16), 47 / (3 * 16)])
    assert train_main(cfg_overrides({**cfg, "epochs": 1})) == 0


def test_the_seed_example_config_trains_with_every_switch_on(tiny_data, tmp_path):
    cfg = {**SEED_EXAMPLE, **tiny_cfg(tiny_data, tmp_path / "o", epochs=2), "model_name": "test_resnet",
           "class_number": 3, "metrics": ["acc", "F1"], "model_path": "", "eval_path": str(tiny_data / "test"),
           "test_batch_size": 8, "dropout": 0.5, "mixup": True, "cutmix": True, "show_data": True,
           "sample_weights": "balanced", "scheduler": "default-0.1-3", "optimizer": "Adam"}
    (tmp_path / "config.py").write_text("cfg = " + repr(cfg) + "\n")
    assert train_main(["--config", str(tmp_path / "config.py")]) == 0
    assert os.path.getsize(tmp_path / "o" / "data_preview.png") > 0
    assert len(pd.read_csv(tmp_path / "o" / "results.csv")) == 2
    assert torch.load(tmp_path / "o" / "best.pth", weights_only=True)["meta"]["class_names"] == \
        ["left", "middle", "right"]
