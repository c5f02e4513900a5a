"""The three scripts, run as a user runs them: files written, numbers consistent, errors clear."""
import json
import os

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import cfg_overrides, make_tiny_data, run_script, tiny_cfg, write_config, write_images
from PIL import Image
from sklearn.metrics import accuracy_score, f1_score

from easycls.api import load_model
from easycls.cli.inference import evaluate_main, predict_main
from easycls.cli.train import train_main
from easycls.core.errors import ConfigError
from easycls.data.scan import scan_labelled


@pytest.fixture(scope="module")
def trained_once(tmp_path_factory):
    """A model trained once through the real train.py, as a user runs it (a process of its own), the config file
    used, and the data. Tests that evaluate or predict write into their own save_dir."""
    root = tmp_path_factory.mktemp("trained")
    data = make_tiny_data(root)
    cfg = tiny_cfg(data, root / "out", epochs=2, save_best_only=False)
    config = write_config(root / "config.py", cfg)
    result = run_script("train.py", "--config", config, cwd=root)
    assert result.returncode == 0, result.stderr
    return cfg, config, result, data


@pytest.fixture
def trained(trained_once):
    return trained_once[:3]


@pytest.fixture
def tiny_data(trained_once):
    return trained_once[3]


def test_train_writes_every_output(trained):
    cfg, _, result = trained
    out = cfg["save_dir"]
    for name in ("best.pth", "last.pth", "best.safetensors", "best.json", "results.csv", "loss.png", "acc.png",
                 "config.json", "train.log", "epoch_001.pth", "epoch_002.pth"):
        assert os.path.getsize(os.path.join(out, name)) > 0, name
    results = pd.read_csv(os.path.join(out, "results.csv"))
    assert list(results.columns) == ["epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "seconds"]
    assert results["epoch"].tolist() == [1, 2]
    state = torch.load(os.path.join(out, "best.pth"), weights_only=True)
    assert state["meta"]["class_names"] == ["left", "middle", "right"]
    assert state["meta"]["img_size"] == [16, 16] and state["meta"]["channels"] == 1
    # best.pth is the first epoch with the highest val_acc, and its weights score exactly that on val again
    best = results.loc[results["val_acc"].idxmax()]
    assert state["epoch"] + 1 == best["epoch"] == json.load(open(os.path.join(out, "best.json")))["epoch"]
    val = scan_labelled(cfg["val_path"])
    again = load_model(os.path.join(out, "best.pth"), device="cpu").predict(val.paths).argmax(1) == val.labels
    assert again.mean() == pytest.approx(best["val_acc"], abs=1e-9)
    assert f"best epoch {int(best['epoch'])} of 2: val_acc = {best['val_acc']:.4f}" in result.stdout
    assert json.load(open(os.path.join(out, "config.json")))["epochs"] == 2


def test_evaluate_and_predict_agree_with_sklearn(trained, tiny_data, tmp_path, monkeypatch, capsys):
    """evaluate.py and predict.py with the training run's config file, from another folder."""
    cfg, config, _ = trained
    out = str(tmp_path / "out")
    elsewhere = [f"save_dir={out!r}", f"model_path={os.path.join(cfg['save_dir'], 'best.pth')!r}"]
    monkeypatch.chdir(tmp_path)
    # Small batches of a single class each, of different sizes: any train-mode BatchNorm would show.
    code = evaluate_main(["--config", config, f"eval_path={str(tiny_data / 'test')!r}", "test_batch_size=5",
                          *elsewhere])
    stdout = capsys.readouterr().out
    assert code == 0
    assert "accuracy" in stdout and "macro" in stdout and "middle" in stdout
    metrics = json.load(open(os.path.join(out, "eval", "metrics.json")))
    for name in ("per_class.csv", "confusion_matrix.csv", "confusion_matrix.png"):
        assert os.path.getsize(os.path.join(out, "eval", name)) > 0
    assert predict_main(["--config", config, "save_probs=True", "test_batch_size=4", *elsewhere]) == 0
    pre = pd.read_csv(os.path.join(out, "pre.csv"))
    assert list(pre.columns[:5]) == ["image_id", "label", "class_name", "confidence", "status"]
    truth = [["left", "middle", "right"].index(i.split("/")[0]) for i in pre["image_id"]]
    assert metrics["accuracy"] == pytest.approx(accuracy_score(truth, pre["label"]))
    assert metrics["macro"]["f1"] == pytest.approx(f1_score(truth, pre["label"], average="macro"))
    probs = pre[[c for c in pre.columns if c.startswith("prob_")]].to_numpy()
    assert np.allclose(probs.sum(axis=1), 1, atol=1e-4)
    assert np.allclose(probs.max(axis=1), pre["confidence"], atol=1e-6)
    cm = pd.read_csv(os.path.join(out, "eval", "confusion_matrix.csv"), index_col=0).to_numpy()
    assert cm.sum() == len(pre) and np.trace(cm) == round(metrics["accuracy"] * len(pre))


def test_predict_ids_order_and_bad_files(trained, tmp_path):
    cfg, _, _ = trained
    cfg = {**cfg, "model_path": os.path.join(cfg["save_dir"], "best.pth"), "save_dir": str(tmp_path / "out")}
    folder = tmp_path / "unlabelled"
    for sub in ("a", "b"):
        os.makedirs(folder / sub)
        Image.new("L", (16, 16), 90).save(folder / sub / "same.png")
    os.makedirs(folder / "c, d")
    Image.new("L", (16, 16), 90).save(folder / "c, d" / 'quote"é.png')
    (folder / "a" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (folder / "notes.txt").write_text("hello")
    args = cfg_overrides({**cfg, "test_path": str(folder), "test_batch_size": 2})
    assert predict_main(args) == 0
    pre = pd.read_csv(os.path.join(cfg["save_dir"], "pre.csv"))
    assert pre["image_id"].tolist() == ["a/corrupt.png", "a/same.png", "b/same.png", 'c, d/quote"é.png']
    bad = pre.set_index("image_id").loc["a/corrupt.png"]
    assert bad["status"].startswith("error") and np.isnan(bad["label"])
    assert (pre["status"] == "ok").sum() == 3


def test_checkpoint_alone_defines_the_model(trained, tiny_data, tmp_path, capsys):
    cfg, _, _ = trained
    cfg = {**cfg, "model_path": os.path.join(cfg["save_dir"], "best.pth"), "save_dir": str(tmp_path / "out")}
    args = cfg_overrides({**cfg, "eval_path": str(tiny_data / "test")})
    assert evaluate_main(args) == 0
    first = json.load(open(os.path.join(cfg["save_dir"], "eval", "metrics.json")))
    other = {**cfg, "model_name": "no_such_model", "class_number": 7, "target_img_size": [64, 64], "channels": 3,
             "eval_path": str(tiny_data / "test")}
    capsys.readouterr()
    assert evaluate_main(cfg_overrides(other)) == 0
    second = json.load(open(os.path.join(cfg["save_dir"], "eval", "metrics.json")))
    first.pop("seconds"), second.pop("seconds")  # evaluation time, the one field that may differ
    assert first == second
    out = capsys.readouterr().out
    assert "target_img_size=[64, 64] differs from the model's [16, 16]" in out


def test_evaluate_rejects_unknown_class_folder(trained, tmp_path, capsys):
    cfg, _, _ = trained
    write_images(str(tmp_path / "ev"), classes=["left", "giraffe"], per_class=1)
    assert evaluate_main(cfg_overrides({**cfg, "eval_path": str(tmp_path / "ev")})) == 2
    assert "['giraffe'] that the model does not know" in capsys.readouterr().err


@pytest.mark.parametrize("override,message", [
    ("lerning_rate=0.1", "unknown config key 'lerning_rate'; did you mean 'learning_rate'?"),
    ("epochs=-1", "bad value for 'epochs': -1; allowed: an integer >= 1"),
    ("scheduler=step-4-fast", "bad scheduler spec 'step-4-fast'"),
    ("model_name=resnet5O", "unknown model_name 'resnet5O'; did you mean"),
    ("pretrained='missing.pth'", "pretrained file not found: missing.pth"),
    ("label_type='CSV'", "label_type='CSV' needs label_path, a CSV of image_id,label[,split]; not found: ''"),
])
def test_config_errors_are_one_line_and_write_nothing(tmp_path, monkeypatch, capsys, override, message):
    monkeypatch.chdir(tmp_path)  # where the built-in digits would be written
    assert train_main([f"save_dir={str(tmp_path / 'never')!r}", override]) == 2
    err = capsys.readouterr().err
    assert err.strip().startswith("error: ") and message in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not os.path.exists(tmp_path / "never") and not os.path.exists(tmp_path / "data")


def test_a_missing_pretrained_file_is_reported_before_the_data_is_scanned(tmp_path, capsys):
    cfg = {"train_path": str(tmp_path / "no_such_data"), "pretrained": "gone.pth", "save_dir": str(tmp_path / "o")}
    assert train_main(cfg_overrides(cfg)) == 2
    assert "pretrained file not found: gone.pth" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "o")


def test_several_gpu_ids_point_to_torchrun(monkeypatch):
    from easycls.config.schema import defaults
    from easycls.engine import builder
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with pytest.raises(ConfigError, match=r"GPU_ID='0,1' names 2 GPUs.*torchrun --standalone --nproc_per_node=2"):
        builder.preflight({**defaults(), "GPU_ID": "0,1"})


@pytest.mark.parametrize("path,builtin", [("data/digits/train", True), ("data/digits", True),
                                          ("./data/digits/val", True), ("data/digits_v2/train", False),
                                          ("data/digitsx", False), ("other/data/digits", False)])
def test_only_the_builtin_digits_folder_counts_as_builtin(path, builtin):
    from easycls.engine.training import is_builtin_digits
    assert is_builtin_digits(path) == builtin


def test_class_number_mismatch_names_both_numbers(tiny_data, tmp_path, capsys):
    assert train_main(cfg_overrides(tiny_cfg(tiny_data, tmp_path / "o", class_number=5))) == 2
    err = capsys.readouterr().err
    assert "class_number is 5 but" in err and "has 3 class folders: ['left', 'middle', 'right']" in err


def test_freeze_then_unfreeze_really_trains_the_backbone(tiny_data, tmp_path):
    cfg = tiny_cfg(tiny_data, tmp_path / "o", epochs=2, freeze_nonlinear_epoch=1, save_best_only=False,
                   model_name="test_efficientnet", optimizer="SGD", scheduler="constant")
    assert train_main(cfg_overrides(cfg)) == 0
    e1 = torch.load(tmp_path / "o" / "epoch_001.pth", weights_only=True)["model"]
    e2 = torch.load(tmp_path / "o" / "epoch_002.pth", weights_only=True)["model"]
    from easycls.models.factory import create_model
    torch.manual_seed(42)  # the default random_seed, as train.py seeds it
    init = create_model("test_efficientnet", 3, 1).state_dict()
    weights = [k for k in init if k.endswith("weight") and "bn" not in k and init[k].ndim == 4]
    assert all(torch.equal(init[k], e1[k]) for k in weights)  # frozen during epoch 1
    assert not torch.equal(init["classifier.weight"], e1["classifier.weight"])
    assert all(not torch.equal(e1[k], e2[k]) for k in weights)  # all updated in epoch 2


def test_pretrained_fine_tune_from_a_checkpoint_of_another_dataset(trained, tmp_path, capsys):
    cfg, _, _ = trained
    data = tmp_path / "two"
    for split in ("train", "val"):
        write_images(str(data / split), classes=["x", "y"], per_class=6)
    new = tiny_cfg(data, tmp_path / "ft", class_number=2, epochs=1,
                   pretrained=os.path.join(cfg["save_dir"], "best.pth"))
    assert train_main(cfg_overrides(new)) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("pretrained:"))
    assert "skipped for shape 2" in line and "head 'fc': 2" in line and "unexpected 0" in line


def test_tta_averages_each_prediction_with_its_flip(trained, tiny_data, tmp_path):
    from easycls.config.loading import validate
    from easycls.config.schema import defaults
    from easycls.evaluation.predictor import load_predictor
    cfg = validate({**defaults(), **trained[0], "TTA": True})
    model = load_predictor(cfg)
    images = torch.randint(0, 255, (4, 1, 16, 16), dtype=torch.uint8)
    x = model.preprocess(images)
    with torch.no_grad():
        t = model.temperature  # the calibration temperature saved in best.pth
        expected = ((model.model(x) / t).softmax(1) + (model.model(x.flip(3)) / t).softmax(1)) / 2
    assert torch.allclose(model.probs(images), expected, atol=1e-6)
    for tta in (False, True):
        out = tmp_path / f"tta{tta}"
        assert predict_main(cfg_overrides({**trained[0], "TTA": tta, "save_dir": str(out),
                                           "model_path": os.path.join(trained[0]["save_dir"], "best.pth")})) == 0
        assert evaluate_main(cfg_overrides({**trained[0], "TTA": tta, "save_dir": str(out),
                                            "eval_path": str(tiny_data / "test"),
                                            "model_path": os.path.join(trained[0]["save_dir"], "best.pth")})) == 0
    plain, flipped = (pd.read_csv(tmp_path / f"tta{t}" / "pre.csv")["confidence"] for t in (False, True))
    assert not np.allclose(plain, flipped)
