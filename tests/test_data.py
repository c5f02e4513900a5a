import os

import numpy as np
import pytest
import torch
from conftest import write_images
from PIL import Image

from easycls.core.errors import DataError
from easycls.data.augment import BatchAugment
from easycls.data.images import read_image
from easycls.data.loaders import EpochSampler, FileDataset, MemoryLoader, Preprocessor, collate, decode_all, epoch_order
from easycls.data.scan import Samples, scan_labelled, scan_unlabelled


def test_scan_sorted_classes_extensions_and_hidden(tmp_path):
    root = tmp_path / "train"
    write_images(str(root), classes=["b", "a"], per_class=2)
    Image.new("RGB", (8, 8)).save(root / "a" / "UPPER.JPG")
    Image.new("RGB", (8, 8)).save(root / "a" / "x.webp")
    Image.new("L", (8, 8)).save(root / "a" / "y.TIF")
    (root / "a" / "notes.txt").write_text("not an image")
    os.makedirs(root / ".cache" / "c")
    Image.new("L", (8, 8)).save(root / ".cache" / "c" / "hidden.png")
    os.makedirs(root / "__MACOSX")
    samples = scan_labelled(str(root))
    assert samples.classes == ["a", "b"]
    names = sorted(os.path.basename(p) for p in samples.paths)
    assert names == ["000.png", "000.png", "001.png", "001.png", "UPPER.JPG", "x.webp", "y.TIF"]
    assert samples.labels.count(0) == 5 and samples.labels.count(1) == 2


def test_layout_errors(tmp_path):
    write_images(str(tmp_path / "ok"), per_class=1)
    os.makedirs(tmp_path / "ok" / "empty")
    with pytest.raises(DataError, match="class folder .*empty has no images"):
        scan_labelled(str(tmp_path / "ok"))
    Image.new("L", (8, 8)).save(tmp_path / "ok" / "stray.png")
    with pytest.raises(DataError, match="images at its top level \\(stray.png\\)"):
        scan_labelled(str(tmp_path / "ok"))
    with pytest.raises(DataError, match="not found"):
        scan_labelled(str(tmp_path / "missing"))


def test_val_class_unknown_to_train_is_an_error(tmp_path):
    write_images(str(tmp_path / "val"), classes=["left", "zebra"], per_class=1)
    with pytest.raises(DataError, match=r"class folder\(s\) \['zebra'\] that the model does not know"):
        scan_labelled(str(tmp_path / "val"), ["left", "middle", "right"])
    subset = scan_labelled(str(tmp_path / "val"), ["left", "zebra", "other"])  # missing classes are fine
    assert subset.labels == [0, 1]


@pytest.mark.parametrize("mode,channels", [("L", 3), ("RGB", 1), ("RGB", 3), ("L", 1)])
def test_channels_follow_the_config(tmp_path, mode, channels):
    path = tmp_path / "x.png"
    Image.new(mode, (20, 10), color=200 if mode == "L" else (200, 200, 200)).save(path)
    arr = read_image(str(path), channels, (8, 16))
    assert arr.shape == (8, 16, channels) and arr.dtype == np.uint8 and arr.min() == 200


def test_decode_all_matches_streaming_and_skips_bad_files(tmp_path):
    write_images(str(tmp_path / "d"), per_class=3)
    (tmp_path / "d" / "left" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    samples = scan_labelled(str(tmp_path / "d"))
    images, kept = decode_all(samples, 1, (12, 12), workers=2)
    assert images.shape == (9, 1, 12, 12) and len(kept.paths) == 9
    assert not any("broken" in p for p in kept.paths)
    stream = collate([FileDataset(samples, 1, (12, 12))[i] for i in range(len(samples.paths))])
    assert torch.equal(stream.images, images)
    assert [samples.paths[i] for i, _ in stream.failures] == [str(tmp_path / "d" / "left" / "broken.png")]


def test_epoch_order_is_seeded_per_epoch_and_shards_evenly():
    assert torch.equal(epoch_order(10, True, 1, 0), epoch_order(10, True, 1, 0))
    assert not torch.equal(epoch_order(10, True, 1, 0), epoch_order(10, True, 1, 1))
    shards = [epoch_order(11, True, 1, 3, rank=r, world=2, even=True) for r in range(2)]
    assert len(shards[0]) == len(shards[1]) == 6
    assert set(torch.cat(shards).tolist()) == set(range(11))
    uneven = [epoch_order(11, False, 0, 0, rank=r, world=2) for r in range(2)]
    assert sorted(torch.cat(uneven).tolist()) == list(range(11))


def test_memory_loader_batches_and_drop_last():
    images = torch.arange(10, dtype=torch.uint8).reshape(10, 1, 1, 1)
    samples = Samples([f"{i}.png" for i in range(10)], list(range(10)), [str(i) for i in range(10)])
    loader = MemoryLoader(images, samples, 4, EpochSampler(10, shuffle=True, seed=0), drop_last=True)
    batches = list(loader)
    assert len(loader) == len(batches) == 2
    for batch in batches:
        assert torch.equal(batch.images.flatten().long(), batch.labels) and torch.equal(batch.index, batch.labels)


def test_preprocessor_normalises_and_augment_keeps_shape():
    pre = Preprocessor([0.5], [0.25], 1, torch.device("cpu"), channels_last=False)
    x = pre(torch.full((2, 1, 4, 4), 255, dtype=torch.uint8))
    assert torch.allclose(x, torch.full_like(x, 2.0))
    torch.manual_seed(0)
    aug = Preprocessor([0.5], [0.25], 1, torch.device("cpu"), True, BatchAugment("strong", hflip=True))
    batch = torch.randint(0, 255, (8, 1, 16, 16), dtype=torch.uint8)
    out = aug(batch, train=True)
    assert out.shape == (8, 1, 16, 16) and out.is_contiguous(memory_format=torch.channels_last)
    assert not torch.allclose(out, aug(batch, train=False))


def test_scan_unlabelled_is_recursive_and_counts_other_files(tmp_path):
    write_images(str(tmp_path / "t"), per_class=1)
    (tmp_path / "t" / "readme.md").write_text("x")
    samples, others = scan_unlabelled(str(tmp_path / "t"))
    assert len(samples.paths) == 3 and len(others) == 1


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "LA", "P", "I;16"])
@pytest.mark.parametrize("channels", [1, 3])
def test_png_fast_path_equals_the_pil_path(tmp_path, mode, channels):
    from easycls.data.images import _open
    rng = np.random.default_rng(0)
    if mode == "I;16":
        image = Image.fromarray(rng.integers(0, 65535, (9, 7), dtype=np.uint16))
    elif mode == "P":
        image = Image.fromarray(rng.integers(0, 255, (9, 7, 3), dtype=np.uint8)).convert("P")
    else:
        depth = {"L": 1, "RGB": 3, "RGBA": 4, "LA": 2}[mode]
        image = Image.fromarray(rng.integers(0, 255, (9, 7, depth), dtype=np.uint8).squeeze(), mode)
    image.save(tmp_path / "x.png")
    fast = read_image(str(tmp_path / "x.png"), channels, (9, 7))
    assert np.array_equal(fast, _open(str(tmp_path / "x.png"), channels).reshape(9, 7, channels))


@pytest.mark.parametrize("count", [0, 1, 5, 13, 40])
@pytest.mark.parametrize("ahead", [0, 1, 4])
def test_prefetch_loader_yields_every_item_in_order(count, ahead):
    """ahead=0 is the CPU path (decode between batches); ahead>0 the GPU path (decode while the model runs)."""
    from easycls.data.loaders import PrefetchLoader

    class Numbers:
        def __len__(self):
            return count

        def __getitem__(self, i):
            return np.full((2, 2, 1), i, np.uint8), i, i, ""

    batches = list(PrefetchLoader(Numbers(), batch_size=3, workers=2, ahead=ahead))
    assert len(batches) == (count + 2) // 3
    assert [int(i) for b in batches for i in b.index] == list(range(count))
    assert all(torch.equal(b.images[:, 0, 0, 0].long(), b.labels) for b in batches)
