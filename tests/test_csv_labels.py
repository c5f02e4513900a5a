"""label_type='CSV': labels from a spreadsheet, a saved split, and evaluation equal to the class-folder form."""
import json
import os

import pandas as pd
import pytest
from conftest import cfg_overrides, tiny_cfg

from easycls.cli.inference import evaluate_main
from easycls.cli.train import train_main


def flatten(data, tmp_path):
    """The class-folder images copied into one flat folder, and a labels CSV for them."""
    flat = tmp_path / "flat"
    rows = []
    for split in ("train", "test"):
        for name in sorted(os.listdir(data / split)):
            for file in sorted(os.listdir(data / split / name)):
                os.makedirs(flat / split, exist_ok=True)
                image_id = f"{name}_{file}"
                (flat / split / image_id).write_bytes((data / split / name / file).read_bytes())
                rows.append((split, image_id, name))
    frame = pd.DataFrame(rows, columns=["split", "image_id", "label"])
    for split in ("train", "test"):
        frame[frame["split"] == split][["image_id", "label"]].to_csv(tmp_path / f"{split}.csv", index=False)
    return flat


def test_csv_labels_train_with_a_saved_split_and_evaluate_like_folders(tiny_data, tmp_path, capsys):
    flat = flatten(tiny_data, tmp_path)
    cfg = tiny_cfg(tiny_data, tmp_path / "o", label_type="CSV", label_path=str(tmp_path / "train.csv"),
                   train_path=str(flat / "train"), val_path="", val_fraction=0.25, epochs=2, audit=True)
    assert train_main(cfg_overrides(cfg)) == 0
    assert "takes its labels from" in capsys.readouterr().out  # the class-folder audit leaves train out
    split = pd.read_csv(tmp_path / "o" / "split.csv")
    assert list(split.columns) == ["image_id", "label", "split"] and len(split) == 48
    assert (split.groupby("label")["split"].apply(lambda s: (s == "val").sum()) == 4).all()  # stratified
    folder_cfg = {**cfg, "label_type": "DIR", "eval_path": str(tiny_data / "test")}
    assert evaluate_main(cfg_overrides(folder_cfg)) == 0
    from_folders = json.load(open(tmp_path / "o" / "eval" / "metrics.json"))
    csv_cfg = {**cfg, "label_path": str(tmp_path / "test.csv"), "eval_path": str(flat / "test")}
    assert evaluate_main(cfg_overrides(csv_cfg)) == 0
    from_csv = json.load(open(tmp_path / "o" / "eval" / "metrics.json"))
    for metrics in (from_folders, from_csv):
        metrics.pop("seconds"), metrics.pop("path")
    assert from_csv == from_folders
    capsys.readouterr()
    assert from_csv["in_sample"] is False
    assert evaluate_main(cfg_overrides(cfg)) == 0  # no eval_path: the val rows of split.csv
    out = capsys.readouterr().out
    assert "split.csv (val rows)" in out and out.count("in-sample and optimistic") == 1
    assert json.load(open(tmp_path / "o" / "eval" / "metrics.json"))["in_sample"] is True


@pytest.mark.parametrize("rows,message", [
    ("image_id,label\nleft_000.png,left\nleft_000.png,left\n", "duplicated ids: left_000.png"),
    ("image_id,label\nleft_000.png,giraffe\n", "labels that are not classes"),
    ("image_id,label\nnope.png,left\n", "missing image files under .*: nope.png"),
    ("image_id,label,split\nleft_000.png,left,test\n", "a split other than train or val: left_000.png"),
])
def test_bad_label_csvs_are_one_line_errors_naming_rows(tiny_data, tmp_path, capsys, rows, message):
    flat = flatten(tiny_data, tmp_path)
    (tmp_path / "bad.csv").write_text(rows)
    cfg = tiny_cfg(tiny_data, tmp_path / "o", label_type="CSV", label_path=str(tmp_path / "bad.csv"),
                   train_path=str(flat / "train"), val_path="", class_names=["left", "middle", "right"])
    assert train_main(cfg_overrides(cfg)) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    import re
    assert re.search(message, err), err
