"""The Python API: easycls.train / evaluate / predict / export / load_model, as a notebook would call them."""
import json
import logging

import numpy as np
import pandas as pd
import pytest
from conftest import make_tiny_data, tiny_cfg
from PIL import Image

import easycls


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One 3-epoch run through the API; the test functions read its result and files."""
    root = tmp_path_factory.mktemp("api")
    data = make_tiny_data(root)
    cfg = tiny_cfg(data, root / "out")
    before = list(logging.getLogger("easycls").handlers)
    result = easycls.train(**cfg)
    assert logging.getLogger("easycls").handlers == before  # the library adds no handler
    return result, cfg, data, before


def test_train_returns_the_best_epoch_history_and_files(trained):
    result, cfg, _, _ = trained
    history = pd.read_csv(result.files["results.csv"])
    assert result.epochs_run == len(history) == 3
    assert list(result.history.columns[:4]) == ["epoch", "lr", "train_loss", "train_acc"]
    assert result.history["val_acc"].tolist() == history["val_acc"].tolist()
    best_row = history.loc[history["val_acc"].idxmax()]
    assert result.monitor == "val_acc" and result.best == pytest.approx(best_row["val_acc"])
    assert result.best_epoch == int(best_row["epoch"])
    assert result.best > 1 / 3 + 0.2  # the bars are learnable in 3 epochs
    assert result.files["best.pth"].startswith(cfg["save_dir"])


def test_the_library_prints_nothing_and_adds_no_logging_handler(trained, tmp_path, capsys):
    _, cfg, data, _ = trained
    before = list(logging.getLogger("easycls").handlers)
    easycls.train(**{**cfg, "save_dir": str(tmp_path / "again"), "epochs": 1})
    easycls.predict(cfg, test_path=str(data / "test"))
    out, err = capsys.readouterr()
    assert out == "" and err == ""
    assert logging.getLogger("easycls").handlers == before
    assert "epoch 1" in (tmp_path / "again" / "train.log").read_text()  # the run's own log file is still written


def test_predict_returns_one_row_per_image_as_in_pre_csv(trained, tmp_path):
    _, cfg, data, _ = trained
    frame = easycls.predict(model_path=cfg["save_dir"] + "/best.pth", test_path=str(data / "test"),
                            save_dir=cfg["save_dir"], output=tmp_path / "pre.csv")
    assert len(frame) == 18 and list(frame.columns) == ["image_id", "label", "class_name", "confidence", "status"]
    assert frame.equals(pd.read_csv(tmp_path / "pre.csv"))
    assert frame["image_id"].str.startswith(("left/", "middle/", "right/")).all()


def test_evaluate_returns_the_metrics_json(trained):
    _, cfg, data, _ = trained
    metrics = easycls.evaluate(cfg, eval_path=str(data / "test"))
    assert set(metrics) >= {"accuracy", "macro", "per_class", "confusion_matrix", "path"}
    assert json.load(open(cfg["save_dir"] + "/eval/metrics.json"))["accuracy"] == metrics["accuracy"]
    assert metrics["accuracy"] == pytest.approx(np.trace(metrics["confusion_matrix"]) / 18)


def test_load_model_predicts_paths_pil_images_and_arrays_alike(trained):
    _, cfg, data, _ = trained
    model = easycls.load_model(cfg["save_dir"] + "/best.pth", device="cpu")
    paths = sorted(str(p) for p in (data / "test" / "right").glob("*.png"))[:4]
    from_paths = model.predict(paths)
    from_pil = model.predict([Image.open(p) for p in paths])
    from_arrays = model.predict([np.asarray(Image.open(p).convert("RGB")) for p in paths])
    assert from_paths.shape == (4, 3)
    np.testing.assert_allclose(from_paths.sum(1), 1, atol=1e-5)
    np.testing.assert_allclose(from_pil, from_paths, atol=1e-6)
    np.testing.assert_allclose(from_arrays, from_paths, atol=2e-2)  # RGB -> gray rounding differs by one level
    frame = easycls.predict(cfg, test_path=str(data / "test" / "right"), save_probs=True)
    by_id = frame.set_index("image_id")
    expected = by_id.loc[[p.rsplit("/", 1)[1] for p in paths], ["prob_left", "prob_middle", "prob_right"]]
    np.testing.assert_allclose(from_paths, expected.to_numpy(), atol=1e-5)


@pytest.mark.parametrize("fmt,suffix", [("onnx", "model.onnx"), ("torchscript", "model.pt")])
def test_load_model_runs_exported_files(trained, fmt, suffix):
    _, cfg, data, _ = trained
    parity = easycls.export(cfg, export_format=fmt)
    path = cfg["save_dir"] + "/" + suffix
    assert list(parity) == [path] and parity[path] < 1e-4
    image = Image.open(next((data / "test" / "middle").glob("*.png")))
    exported = easycls.load_model(path, device="cpu").predict(image)
    checkpoint = easycls.load_model(cfg["save_dir"] + "/best.pth", device="cpu").predict(image)
    np.testing.assert_allclose(exported, checkpoint, atol=1e-4)


def test_overrides_are_validated_like_the_command_line():
    with pytest.raises(easycls.ConfigError, match=r"unknown config key 'epochz'; did you mean 'epochs'\?"):
        easycls.train(epochz=3)
    with pytest.raises(easycls.ConfigError, match=r"bad value for 'batch_size': 0"):
        easycls.predict(batch_size=0)
    with pytest.raises(easycls.ConfigError, match="config must be a config file's path, a dict or None"):
        easycls.evaluate(42)
