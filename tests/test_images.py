"""Decoding real-world files: bit depths, transparency, EXIF, big JPEGs, and bad files skipped by name."""
import os
import struct
import zlib

import cv2
import numpy as np
import pytest
from conftest import cfg_overrides, tiny_cfg
from PIL import Image

from easycls.cli.train import train_main
from easycls.data.images import ImageReadError, decode_full, read_image


# ----------------------------------------------------------------------------- pixels and bad files
def png_header_only(path, width, height):
    """A PNG whose header claims ``width x height`` pixels: a decompression bomb for PIL."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
                     + chunk(b"IEND", b""))


def test_sixteen_bit_png_is_scaled_not_clipped(tmp_path):
    arr = np.array([[0, 32896, 65535, 1000]], dtype=np.uint16)
    Image.fromarray(arr).save(tmp_path / "deep.png")
    assert read_image(str(tmp_path / "deep.png"), 1, (1, 4)).ravel().tolist() == [0, 128, 255, 4]


def test_transparency_is_flattened_onto_white(tmp_path):
    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    rgba[..., 0] = 255  # red ...
    rgba[0, 0, 3] = 255  # ... opaque in one pixel only
    Image.fromarray(rgba, "RGBA").save(tmp_path / "alpha.png")
    out = read_image(str(tmp_path / "alpha.png"), 3, (2, 2))
    assert out[0, 0].tolist() == [255, 0, 0] and out[1, 1].tolist() == [255, 255, 255]


def test_exif_orientation_is_applied(tmp_path):
    img = Image.new("L", (4, 2), 0)
    img.putpixel((0, 0), 255)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    img.save(tmp_path / "rot.jpg", exif=exif, quality=100)
    out = read_image(str(tmp_path / "rot.jpg"), 1, (4, 2))
    assert out.shape == (4, 2, 1) and out[0, 1, 0] > 200  # the top-left pixel moved to the top-right


def _photo(width: int, height: int) -> Image.Image:
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([x * 255 // width, y * 255 // height, (x + y) * 255 // (width + height)], -1).astype(np.uint8)
    return Image.fromarray(rgb)


def test_large_jpeg_is_decoded_at_a_reduced_scale_close_to_the_full_decode(tmp_path):
    _photo(400, 300).save(tmp_path / "big.jpg", quality=95)
    path = str(tmp_path / "big.jpg")
    assert decode_full(path, 3).shape == (300, 400, 3)
    assert decode_full(path, 3, at_least=32).shape == (38, 50, 3)  # 1/8: both sides stay >= 32
    assert decode_full(path, 1, at_least=100).shape == (150, 200)  # 1/2
    reduced = read_image(path, 3, (32, 32)).astype(int)
    full = cv2.resize(decode_full(path, 3), (32, 32), interpolation=cv2.INTER_AREA).astype(int)
    assert np.abs(reduced - full).mean() < 2.0  # of 255: a different, equally valid downscale


def test_reduced_jpeg_decoding_keeps_exif_rotation_and_size(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # displayed rotated: 300 wide, 400 high
    _photo(400, 300).save(tmp_path / "rot.jpg", exif=exif, quality=95)
    assert decode_full(str(tmp_path / "rot.jpg"), 3, at_least=64).shape == (100, 75, 3)  # 1/4, rotated
    assert read_image(str(tmp_path / "rot.jpg"), 3, (64, 48)).shape == (64, 48, 3)


def test_cmyk_and_palette_images_are_converted(tmp_path):
    Image.new("CMYK", (4, 4), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg")
    Image.new("RGB", (4, 4), (0, 0, 255)).convert("P").save(tmp_path / "pal.png")
    assert read_image(str(tmp_path / "cmyk.jpg"), 3, (4, 4))[0, 0, 0] > 200  # red
    assert read_image(str(tmp_path / "pal.png"), 3, (4, 4))[0, 0].tolist() == [0, 0, 255]


@pytest.mark.parametrize("name,content,reason", [
    ("trunc.png", "truncate", "truncated"), ("empty.png", b"", "empty file"),
    ("text.png", b"hello, not an image", "not an image"), ("bomb.png", "bomb", "decompression bomb")])
def test_bad_files_give_their_reason(tmp_path, name, content, reason):
    path = tmp_path / name
    if content == "truncate":
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)).save(path)
        path.write_bytes(path.read_bytes()[:200])
    elif content == "bomb":
        png_header_only(path, 30000, 30000)
    else:
        path.write_bytes(content)
    with pytest.raises(ImageReadError, match=reason):
        read_image(str(path), 1, (8, 8))


def add_bad_files(folder):
    """One of each kind of bad file, in class 'left'."""
    (folder / "left" / "empty.png").write_bytes(b"")
    (folder / "left" / "text.jpg").write_bytes(b"not a jpeg")
    (folder / "left" / "._resource.png").write_bytes(b"\x00\x05\x16\x07")
    (folder / "left" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    png_header_only(folder / "left" / "bomb.png", 30000, 30000)
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)).save(folder / "left" / "t.png")
    (folder / "left" / "trunc.png").write_bytes((folder / "left" / "t.png").read_bytes()[:200])
    os.remove(folder / "left" / "t.png")


@pytest.mark.parametrize("cache", ["ram", "none"])
def test_training_skips_and_names_every_bad_file(tiny_data, tmp_path, capsys, cache):
    add_bad_files(tiny_data / "train")
    os.makedirs(tiny_data / "train" / "__MACOSX")
    cfg = tiny_cfg(tiny_data, tmp_path / "o", epochs=1, cache=cache)
    assert train_main(cfg_overrides(cfg)) == 0
    out = capsys.readouterr().out
    for name, reason in (("empty.png", "empty file"), ("text.jpg", "not an image"), ("bomb.png", "decompression"),
                         ("trunc.png", "truncated"), ("._resource.png", "macOS metadata"),
                         (".DS_Store", "macOS metadata")):
        assert any(name in line and reason in line for line in out.splitlines()), name
    assert "skipped 2 file(s) in all" in out  # the up-front scan: ._resource.png and .DS_Store
    if cache == "ram":
        assert "skipped 4 file(s) in all" in out  # decoding: empty, text, bomb, truncated
    assert "train_acc" in out


def test_streamed_validation_names_its_unreadable_file_once(tiny_data, tmp_path, capsys):
    (tiny_data / "val" / "left" / "empty.png").write_bytes(b"")
    assert train_main(cfg_overrides(tiny_cfg(tiny_data, tmp_path / "o", epochs=2, cache="none"))) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len([line for line in lines if "empty.png" in line and "empty file" in line]) == 1  # 2 epochs met it


def test_layout_errors_from_the_cli(tiny_data, tmp_path, capsys):
    os.makedirs(tiny_data / "train" / "empty_class")
    assert train_main(cfg_overrides(tiny_cfg(tiny_data, tmp_path / "o"))) == 2
    assert "empty_class has no images" in capsys.readouterr().err
