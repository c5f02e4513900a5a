"""model_path=[a, b]: evaluate and predict average the members' probabilities, each with its own preprocessing."""
import json

import numpy as np
import pandas as pd
import pytest
from conftest import cfg_overrides, tiny_cfg, write_images

from easycls.cli.inference import evaluate_main, predict_main
from easycls.cli.train import train_main


@pytest.fixture(scope="module")
def members(tmp_path_factory):
    from conftest import make_tiny_data
    root = tmp_path_factory.mktemp("ens")
    data = make_tiny_data(root)
    runs = {"a": dict(epochs=1), "b": dict(epochs=1, random_seed=7, model_name="test_efficientnet"),
            "rgb": dict(epochs=1, channels=3, target_img_size=[20, 20])}
    for name, extra in runs.items():
        assert train_main(cfg_overrides(tiny_cfg(data, root / name, **extra))) == 0
    return root, data


def probs_of(cfg, path):
    assert predict_main(cfg_overrides({**cfg, "model_path": path, "save_probs": True})) == 0
    return pd.read_csv(f"{cfg['save_dir']}/pre.csv")


def test_ensemble_probabilities_are_the_members_mean(members, tmp_path):
    root, data = members
    cfg = tiny_cfg(data, tmp_path / "o")
    a, b = (probs_of(cfg, str(root / n / "best.pth")) for n in ("a", "b"))
    both = probs_of(cfg, [str(root / "a" / "best.pth"), str(root / "b" / "best.pth")])
    cols = [c for c in both.columns if c.startswith("prob_")]
    assert np.allclose(both[cols].to_numpy(), (a[cols].to_numpy() + b[cols].to_numpy()) / 2, atol=2e-6)


def test_members_with_other_sizes_and_channels_evaluate_together(members, tmp_path, capsys):
    root, data = members
    cfg = tiny_cfg(data, tmp_path / "o", eval_path=str(data / "test"),
                   model_path=[str(root / "a" / "best.pth"), str(root / "rgb" / "best.pth")])
    assert evaluate_main(cfg_overrides(cfg)) == 0
    out = capsys.readouterr().out
    assert out.count("loaded ") == 2 and "20x20 px, 3 channel(s)" in out
    metrics = json.load(open(tmp_path / "o" / "eval" / "metrics.json"))
    # Each member saw its own input (16 px grey, 20 px RGB): the ensemble is the mean of the members alone, up to
    # the grey member's second downscale from the batch decoded at 20 px (README).
    paths = [str(root / "a" / "best.pth"), str(root / "rgb" / "best.pth")]
    a, rgb, both = (probs_of(cfg, path) for path in (paths[0], paths[1], paths))
    cols = [c for c in both.columns if c.startswith("prob_")]
    diff = np.abs(both[cols].to_numpy() - (a[cols].to_numpy() + rgb[cols].to_numpy()) / 2)
    assert diff.max() < 0.05 and diff.mean() < 0.02  # measured: 0.024 and 0.009
    assert metrics["n_images"] == len(both)


def test_members_with_other_classes_are_refused_in_one_line(members, tmp_path, capsys):
    root, data = members
    other = tmp_path / "other"
    for split in ("train", "val"):
        write_images(str(other / split), classes=["left", "middle", "up"], per_class=6)
    assert train_main(cfg_overrides(tiny_cfg(other, tmp_path / "x", epochs=1))) == 0
    capsys.readouterr()
    cfg = tiny_cfg(data, tmp_path / "o", model_path=[str(root / "a" / "best.pth"), str(tmp_path / "x" / "best.pth")])
    assert predict_main(cfg_overrides(cfg)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cannot ensemble" in err and "'up'" in err
