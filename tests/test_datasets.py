"""easycls.datasets: the built-in sets are written as class folders with the documented splits."""
import gzip
import os
import struct

import numpy as np
import pytest
from PIL import Image

from easycls.core.errors import DataError
from easycls.datasets import FONTS, TEST_FONTS, main, read_idx, render_digits


def counts(root):
    return {split: sum(len(files) for _, _, files in os.walk(root / split)) for split in ("train", "val", "test")}


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """``python -m easycls.datasets digits <folder>``, run once for the module."""
    root = tmp_path_factory.mktemp("digits") / "d"
    assert main(["digits", str(root)]) == 0
    return root


def test_digits_writes_every_image_once(digits):
    n = counts(digits)
    assert sum(n.values()) == 1797 and n["test"] == 270 and sorted(os.listdir(digits / "train")) == \
        [str(d) for d in range(10)]


def test_digits_command_writes_the_split_a_first_training_run_writes(digits, tmp_path, monkeypatch):
    from easycls.config.schema import defaults
    from easycls.engine.training import ensure_builtin_data
    monkeypatch.chdir(tmp_path)
    ensure_builtin_data(defaults())  # what `python train.py` does first with the default config
    for split in ("train", "val", "test"):
        files = lambda root: sorted(p.relative_to(root).as_posix() for p in root.rglob("*.png"))  # noqa: E731
        first, second = digits / split, tmp_path / "data" / "digits" / split
        assert files(first) == files(second)
        for name in files(first)[:20]:
            assert (first / name).read_bytes() == (second / name).read_bytes()


def write_idx(path, array):
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(">" + "I" * array.ndim, *array.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


def test_idx_reads_mnist_format_files(tmp_path):
    rng = np.random.default_rng(0)
    src = tmp_path / "src"
    src.mkdir()
    labels = np.arange(60) % 3
    write_idx(src / "train-images-idx3-ubyte.gz", rng.integers(0, 255, (60, 28, 28)))
    write_idx(src / "train-labels-idx1-ubyte.gz", labels)
    write_idx(src / "t10k-images-idx3-ubyte.gz", rng.integers(0, 255, (12, 28, 28)))
    write_idx(src / "t10k-labels-idx1-ubyte.gz", np.arange(12) % 3)
    assert main(["idx", str(src), str(tmp_path / "out"), "--classes", "a,b,c"]) == 0
    assert counts(tmp_path / "out") == {"train": 50, "val": 10, "test": 12}
    assert sorted(os.listdir(tmp_path / "out" / "test")) == ["a", "b", "c"]
    os.remove(src / "t10k-labels-idx1-ubyte.gz")
    assert main(["idx", str(src), str(tmp_path / "again")]) == 2
    (tmp_path / "float.idx").write_bytes(b"\x00\x00\x0d\x01" + b"\x00" * 8)  # 0x0d: float32, not bytes
    with pytest.raises(DataError, match="not an unsigned-byte IDX file"):
        read_idx(str(tmp_path / "float.idx"))


def test_fonts_renders_mnist_style_digits_with_unseen_test_fonts(tmp_path):
    assert main(["fonts", str(tmp_path / "f"), "--per-font", "2"]) == 0
    n = counts(tmp_path / "f")
    assert n["test"] == TEST_FONTS * 10 * 2 and n["train"] + n["val"] == (len(FONTS) - TEST_FONTS) * 10 * 2
    image = np.asarray(Image.open(next((tmp_path / "f" / "test" / "7").iterdir())))
    assert image.shape == (28, 28) and image[:2].max() == 0 and image.max() > 200  # black frame, bright digit
    a, labels = render_digits(FONTS[:2], 3, seed=5)
    b, _ = render_digits(FONTS[:2], 3, seed=5)
    assert np.array_equal(a, b) and labels.tolist() == [d for _ in range(2) for d in range(10) for _ in range(3)]
