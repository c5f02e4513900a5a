"""The dataset audit: counts, unreadable files, duplicates and leakage; the command and the train pre-flight."""
import json
import os

import pytest
from conftest import cfg_overrides, tiny_cfg
from PIL import Image

from easycls.cli.train import train_main
from easycls.data.audit import audit, find_splits, main


# ----------------------------------------------------------------------------- audit
def test_audit_counts_unreadable_duplicates_and_leakage(tiny_data, tmp_path):
    left = tiny_data / "train" / "left"
    (left / "copy.png").write_bytes((left / "000.png").read_bytes())
    Image.open(left / "001.png").save(tiny_data / "test" / "middle" / "leak.bmp")  # re-encoded copy
    (left / "empty.png").write_bytes(b"")
    report = audit(find_splits(str(tiny_data)))
    assert report["splits"]["train"]["per_class"] == {"left": 18, "middle": 16, "right": 16}
    assert report["splits"]["train"]["imbalance_ratio"] == pytest.approx(18 / 16, abs=1e-3)
    assert [u["reason"] for u in report["unreadable"]] == ["empty file"]
    within = [sorted(os.path.basename(p) for p in d["paths"]) for d in report["duplicates_within"]]
    assert ["000.png", "copy.png"] in within
    assert any(e["splits"] == ["test", "train"] and any(p.endswith("leak.bmp") for p in e["paths"])
               for e in report["leakage"])


def test_audit_command_and_train_preflight(tiny_data, tmp_path, easycls_log):
    assert main([str(tiny_data), "--out", str(tmp_path / "a")]) == 0
    assert any("0 unreadable" in message for message in easycls_log)
    assert "| train | 48 | 3 | 1.0 |" in (tmp_path / "a" / "audit.md").read_text()
    assert train_main(cfg_overrides(tiny_cfg(tiny_data, tmp_path / "o", epochs=1, audit=True))) == 0
    report = json.load(open(tmp_path / "o" / "audit" / "audit.json"))
    assert set(report["splits"]) == {"train", "val", "test"}
