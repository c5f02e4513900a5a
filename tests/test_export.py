"""export.py, predict/evaluate from exported files (without timm), and the learning-rate finder."""
import contextlib
import io
import json
import os
import subprocess
import sys
from types import SimpleNamespace

import pandas as pd
import pytest
import torch
from conftest import cfg_overrides, make_tiny_data, tiny_cfg

from easycls.cli.inference import export_main, predict_main
from easycls.cli.train import train_main
from easycls.core.errors import ConfigError

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    data = make_tiny_data(root)
    cfg = tiny_cfg(data, root / "out", epochs=2)
    assert train_main(cfg_overrides(cfg)) == 0
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = export_main(cfg_overrides({**cfg, "export_format": "all"}))
    assert code == 0, err.getvalue()
    return cfg, data, SimpleNamespace(stdout=out.getvalue())


def test_export_writes_both_files_with_metadata_and_prints_parity(exported):
    cfg, _, result = exported
    out = cfg["save_dir"]
    for name in ("model.onnx", "model.pt"):
        line = next(x for x in result.stdout.splitlines() if x.startswith(f"wrote {os.path.join(out, name)}"))
        diff = float(line.rsplit("= ", 1)[1])
        assert diff <= 1e-4 and "images from" in line
    import onnx
    props = {p.key: p.value for p in onnx.load(os.path.join(out, "model.onnx")).metadata_props}
    meta = json.loads(props["easycls"])
    assert meta["class_names"] == ["left", "middle", "right"] and meta["img_size"] == [16, 16]


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_exported_graphs_take_unit_range_input_with_any_batch_size(exported):
    import onnxruntime as ort
    cfg, _, _ = exported
    session = ort.InferenceSession(os.path.join(cfg["save_dir"], "model.onnx"), providers=["CPUExecutionProvider"])
    scripted = torch.jit.load(os.path.join(cfg["save_dir"], "model.pt"))
    for batch in (1, 5):
        x = torch.rand(batch, 1, 16, 16)
        probs = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
        assert probs.shape == (batch, 3) and abs(probs.sum(1) - 1).max() < 1e-5
        assert torch.allclose(scripted(x), torch.from_numpy(probs), atol=1e-5)


@pytest.mark.parametrize("name", ["model.onnx", "model.pt"])
def test_predict_and_evaluate_from_an_exported_file_match_the_checkpoint_without_timm(exported, tmp_path, name):
    cfg, data, _ = exported
    reference = tmp_path / "ref"
    assert predict_main(cfg_overrides({**cfg, "save_dir": str(reference),
                                       "model_path": os.path.join(cfg["save_dir"], "best.pth")})) == 0
    code = ("import sys; from easycls.cli import predict_main, evaluate_main; "
            "assert predict_main(sys.argv[1:]) == 0 and evaluate_main(sys.argv[1:]) == 0; "
            "assert 'timm' not in sys.modules, 'timm was imported'")
    args = cfg_overrides({**cfg, "save_dir": str(tmp_path / "x"), "model_path": os.path.join(cfg["save_dir"], name),
                          "eval_path": str(data / "test")})
    result = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    ours, theirs = pd.read_csv(tmp_path / "x" / "pre.csv"), pd.read_csv(reference / "pre.csv")
    assert ours["image_id"].tolist() == theirs["image_id"].tolist()
    assert ours["label"].tolist() == theirs["label"].tolist()
    assert (ours["confidence"] - theirs["confidence"]).abs().max() < 1e-4
    assert json.load(open(tmp_path / "x" / "eval" / "metrics.json"))["accuracy"] >= 0.9


def test_missing_onnxruntime_names_the_extra(exported, monkeypatch):
    from easycls.config.schema import defaults
    from easycls.evaluation.predictor import load_predictor
    cfg, _, _ = exported
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ConfigError, match=r'onnxruntime is not installed: pip install -e "\.\[onnx\]"'):
        load_predictor({**defaults(), **cfg, "model_path": os.path.join(cfg["save_dir"], "model.onnx")})


def test_export_refuses_an_exported_file(exported, capsys):
    from easycls.cli.inference import export_main
    cfg, _, _ = exported
    assert export_main(cfg_overrides({**cfg, "model_path": os.path.join(cfg["save_dir"], "model.onnx")})) == 2
    assert "export needs a checkpoint" in capsys.readouterr().err


def test_lr_find_writes_the_plot_and_trains_nothing(tiny_data, tmp_path, capsys):
    cfg = tiny_cfg(tiny_data, tmp_path / "o", lr_find=True, batch_size=8)
    assert train_main(cfg_overrides(cfg)) == 0
    out = capsys.readouterr().out
    assert "suggested learning_rate" in out and "python train.py learning_rate=" in out
    assert sorted(os.listdir(tmp_path / "o")) == ["lr_find.csv", "lr_find.png", "train.log"]
    frame = pd.read_csv(tmp_path / "o" / "lr_find.csv")
    assert 10 < len(frame) <= 100 and frame["lr"].is_monotonic_increasing
    assert frame["lr"].iloc[0] == pytest.approx(1e-7)
