"""Multi-label labels CSVs: both forms, detection, one-line errors naming the rows, stratification and weights."""
import re

import numpy as np
import pytest
from conftest import cfg_overrides, tiny_cfg
from PIL import Image

from easycls.cli.train import train_main
from easycls.config import load_config
from easycls.core.errors import ConfigError, DataError
from easycls.data.multilabel import balanced_weights, csv_form, label_matrix, positive_weights, read_labels, strata
from easycls.data.scan import Samples


@pytest.fixture
def images(tmp_path):
    """Six blank 8x8 PNGs a.png ... f.png."""
    root = tmp_path / "images"
    root.mkdir()
    for name in "abcdef":
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / f"{name}.png")
    return root


def write(path, text):
    path.write_text(text)
    return str(path)


def test_the_names_form_reads_bars_and_empty_rows(images, tmp_path):
    csv = write(tmp_path / "l.csv", "image_id,labels,split\na.png,cat|dog,train\nb.png,,train\nc.png, dog ,val\n")
    samples, split = read_labels(csv, str(images))
    assert samples.multi_label and samples.classes == ["cat", "dog"]
    assert samples.labels == [(1, 1), (0, 0), (0, 1)] and split == ["train", "train", "val"]


def test_the_one_hot_form_keeps_the_column_order_and_class_names_reorder_it(images, tmp_path):
    csv = write(tmp_path / "l.csv", "image_id,zebra,ant\na.png,1,0\nb.png,1,1\nc.png,0,0\n")
    assert csv_form(csv) == "one-hot"
    samples, split = read_labels(csv, str(images))
    assert samples.classes == ["zebra", "ant"] and samples.labels == [(1, 0), (1, 1), (0, 0)] and split is None
    fixed, _ = read_labels(csv, str(images), ["ant", "zebra"])
    assert fixed.labels == [(0, 1), (1, 1), (0, 0)]


def test_a_label_column_is_multi_label_when_a_row_has_a_bar_or_when_forced(images, tmp_path):
    single = write(tmp_path / "s.csv", "image_id,label\na.png,cat\nb.png,dog\n")
    multi = write(tmp_path / "m.csv", "image_id,label\na.png,cat\nb.png,cat|dog\n")
    assert csv_form(single) == "single" and csv_form(multi) == "names"
    assert not read_labels(single, str(images))[0].multi_label
    forced, _ = read_labels(single, str(images), multi_label=True)
    assert forced.multi_label and forced.labels == [(1, 0), (0, 1)]
    with pytest.raises(ConfigError, match="several labels per image"):
        read_labels(multi, str(images), multi_label=False)


@pytest.mark.parametrize("rows,message", [
    ("image_id,labels\na.png,cat\nb.png,cat|giraffe\nc.png,giraffe\n", r"classes that are not in .*: b.png, c.png$"),
    ("image_id,cat,dog\na.png,1,0\nb.png,2,0\nc.png,1,yes\n", r"values other than 0 or 1 in rows: b.png, c.png$"),
    ("image_id,labels\na.png,cat\na.png,dog\n", r"duplicated ids: a.png$"),
    ("image_id,labels\nnope.png,cat\n", r"missing image files under .*: nope.png$"),
    ("image_id,labels,split\na.png,cat,test\n", r"a split other than train or val: a.png$"),
])
def test_bad_multilabel_csvs_name_the_rows(images, tmp_path, rows, message):
    with pytest.raises(DataError) as error:
        read_labels(write(tmp_path / "bad.csv", rows), str(images), ["cat", "dog"])
    assert re.search(message, str(error.value)), error.value


def test_a_bad_row_stops_training_in_one_line(images, tmp_path, capsys):
    csv = write(tmp_path / "bad.csv", "image_id,labels\na.png,cat\nb.png,cat|giraffe\n")
    cfg = tiny_cfg(tmp_path, tmp_path / "o", label_type="CSV", label_path=csv, train_path=str(images), val_path="",
                   class_number=2, class_names=["cat", "dog"])
    assert train_main(cfg_overrides(cfg)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: label_path {csv}: rows naming classes that are not in ['cat', 'dog']: b.png"]


def test_class_folders_stay_single_label():
    with pytest.raises(ConfigError, match="multi_label=True needs label_type='CSV'"):
        load_config(None, ["multi_label=True"])
    with pytest.raises(ConfigError, match="monitor='val_mAP' scores multi-label models"):
        load_config(None, ["monitor=val_mAP"])


def multi(rows, classes=("a", "b", "c")):
    return Samples([f"{i}.png" for i in range(len(rows))], [tuple(r) for r in rows], list(classes), multi_label=True)


def test_strata_follow_the_rarest_label_and_pool_tiny_groups():
    rows = [(1, 0, 0)] * 6 + [(1, 1, 0)] * 3 + [(0, 0, 0)] * 2 + [(1, 0, 1)]
    keys = strata(multi(rows), smallest=2)
    assert keys[:6].tolist() == [0] * 6  # only 'a'
    assert keys[6:9].tolist() == [1] * 3  # 'b' is rarer than 'a'
    assert keys[9:11].tolist() == [-1] * 2  # no label
    assert keys[11] == 0  # 'c' alone is too few: pooled, and a pool of one joins the commonest key


def test_balanced_sampling_draws_rare_labels_as_often_and_pos_weight_is_negatives_over_positives():
    rows = [(1, 0, 0)] * 8 + [(1, 1, 0)] * 2
    weights = np.array(balanced_weights(multi(rows)))
    share_b = weights[label_matrix(multi(rows))[:, 1] == 1].sum() / weights.sum()
    assert weights[:8] == pytest.approx(1 / 10) and weights[8:] == pytest.approx(1 / 2) and share_b > 0.5
    assert positive_weights(rows) == pytest.approx([1.0, 8 / 2, 1.0])  # always present or never: 1
