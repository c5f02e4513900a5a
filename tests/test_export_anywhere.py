"""export.py on a machine without the training data (issue 21, item 7): parity on seeded synthetic images."""
import os
import re

import pytest
from conftest import cfg_overrides, tiny_cfg

from easycls.cli.inference import export_main
from easycls.cli.train import train_main

pytest.importorskip("onnxruntime")


def parity_lines(text):
    """``{file name: (what the parity ran on, the figure)}`` from export's log lines."""
    found = re.findall(r"wrote .*?([\w.]+); parity on (\d+ .*): max \|p_exported - p_checkpoint\| = (\S+)", text)
    return {name: (source, float(diff)) for name, source, diff in found}


def test_export_without_any_data_checks_parity_on_synthetic_images(tiny_data, tmp_path, capsys):
    cfg = tiny_cfg(tiny_data, tmp_path / "o", epochs=1)
    assert train_main(cfg_overrides(cfg)) == 0
    gone = tmp_path / "nowhere"
    elsewhere = {**cfg, "train_path": str(gone / "train"), "val_path": str(gone / "val"),
                 "test_path": str(gone / "test"), "export_format": "all"}
    capsys.readouterr()
    assert export_main(cfg_overrides(elsewhere)) == 0
    lines = parity_lines(capsys.readouterr().out)
    assert sorted(lines) == ["model.onnx", "model.pt"]
    for source, diff in lines.values():
        assert source.startswith("64 seeded synthetic images") and diff <= 1e-4
    assert os.path.getsize(tmp_path / "o" / "model.onnx") > 0 and os.path.getsize(tmp_path / "o" / "model.pt") > 0
    # With the data present, the configured images are used and named.
    assert export_main(cfg_overrides({**cfg, "export_format": "torchscript"})) == 0
    assert parity_lines(capsys.readouterr().out)["model.pt"][0] == f"18 images from {cfg['val_path']}"
