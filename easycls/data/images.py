"""Finding image files and decoding one image into a uint8 array, whatever its format.

PIL decodes (EXIF orientation, 16-bit, transparency, CMYK and palette handling, decompression-bomb checks);
OpenCV resizes, because ``cv2.resize`` with INTER_AREA is both fast and a good anti-aliasing filter. Plain PNGs take
a faster OpenCV path with the same pixels, and JPEGs much larger than the model's input are decoded at a reduced
scale (PIL's ``draft``: libjpeg scales by 1/2, 1/4 or 1/8 while decoding), never below the requested size.
"""
import io
import os
import struct
import warnings
from typing import List, Tuple

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
BACKGROUND = (255, 255, 255)  # transparent pixels are flattened onto white
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class ImageReadError(Exception):
    """An image file that cannot be used; the message is the reason."""


def is_hidden(name: str) -> bool:
    """Hidden files and folders, macOS resource forks (``._x``) and ``__MACOSX`` archives are never data."""
    return name.startswith(".") or name == "__MACOSX"


def is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTS) and not is_hidden(name)


def skip_reason(name: str) -> str:
    """Why a file name is not taken as an image ('' when it is one)."""
    if name.startswith("._") or name == ".DS_Store":
        return "macOS metadata file"
    if name.startswith("."):
        return "hidden file"
    return "" if is_image_name(name) else "not an image file (accepted: " + ", ".join(IMAGE_EXTS) + ")"


def list_images(root: str) -> Tuple[List[str], List[Tuple[str, str]]]:
    """All image files under ``root``, recursively and sorted, plus ``(path, reason)`` for every other file.

    Hidden folders and ``__MACOSX`` are not entered.
    """
    images, skipped = [], []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not is_hidden(d))
        for name in sorted(files):
            path = os.path.join(folder, name)
            reason = skip_reason(name)
            if reason:
                skipped.append((path, reason))
            else:
                images.append(path)
    return images, skipped


def _flatten_alpha(im: Image.Image) -> Image.Image:
    rgba = im.convert("RGBA")
    background = Image.new("RGBA", rgba.size, BACKGROUND + (255,))
    return Image.alpha_composite(background, rgba)


def _to_mode(im: Image.Image, channels: int) -> Image.Image:
    """Convert any PIL mode to 8-bit L or RGB; 16-bit data is scaled into 0..255, never clipped."""
    if im.mode.startswith("I;16") or im.mode == "I":
        arr = np.asarray(im, dtype=np.float32)
        scale = 255.0 / 65535.0 if im.mode.startswith("I;16") or arr.max() > 255 else 1.0
        im = Image.fromarray(np.clip(arr * scale + 0.5, 0, 255).astype(np.uint8), "L")
    elif im.mode == "F":
        im = Image.fromarray(np.clip(np.asarray(im), 0, 255).astype(np.uint8), "L")
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        im = _flatten_alpha(im)
    return im.convert("L" if channels == 1 else "RGB")


def _open(source, channels: int, at_least: int = 0) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(source) as im:
            if at_least and im.format == "JPEG":
                # Both sides stay >= at_least, whichever way EXIF later rotates the image.
                im.draft("L" if channels == 1 else "RGB", (at_least, at_least))
            im = ImageOps.exif_transpose(im)
            return np.array(_to_mode(im, channels))  # a writable copy


def _flatten_alpha_array(bgra: np.ndarray) -> np.ndarray:
    alpha = bgra[..., 3:4].astype(np.float32) / 255.0
    background = np.array(BACKGROUND[::-1], dtype=np.float32)
    return (bgra[..., :3] * alpha + background * (1 - alpha) + 0.5).astype(np.uint8)


def _decode_png_fast(data: bytes, channels: int):
    """Decode a plain PNG with OpenCV, with the same results as the PIL path; None means "use PIL".

    PIL's per-image Python overhead is most of the decoding time for small PNGs (MNIST-style data), and that time
    is taken from the model on a small machine. Files with EXIF data, too many pixels or any decoding problem go
    to PIL, which also names the problem.
    """
    if not data.startswith(PNG_MAGIC) or len(data) < 24 or b"eXIf" in data:
        return None
    width, height = struct.unpack(">II", data[16:24])
    if width * height > Image.MAX_IMAGE_PIXELS:
        return None
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if arr is None:
        return None
    if arr.dtype == np.uint16:
        arr = (arr.astype(np.float32) * (255.0 / 65535.0) + 0.5).astype(np.uint8)
    if arr.ndim == 3 and arr.shape[2] == 4:
        arr = _flatten_alpha_array(arr)
    if arr.ndim == 2:
        return arr if channels == 1 else cv2.cvtColor(arr, cv2.COLOR_GRAY2RGB)
    return cv2.cvtColor(arr, cv2.COLOR_BGR2GRAY if channels == 1 else cv2.COLOR_BGR2RGB)


def _read_bytes(path: str) -> bytes:
    """The whole file, with the fewest system calls (half the cost of ``open().read()`` for tiny files)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        chunks = []
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
    finally:
        os.close(fd)


def decode_full(path: str, channels: int = 3, at_least: int = 0) -> np.ndarray:
    """Decode ``path`` into a ``(height, width[, 3])`` uint8 array; raise :class:`ImageReadError`.

    The array has the image's own size, except that a JPEG may be decoded smaller when ``at_least`` is given: by a
    power of two, keeping both sides at ``at_least`` pixels or more.
    """
    try:
        data = _read_bytes(path)
        if not data:
            raise ImageReadError("empty file")
        fast = _decode_png_fast(data, channels)
        return fast if fast is not None else _open(io.BytesIO(data), channels, at_least)
    except UnidentifiedImageError:
        raise ImageReadError("not an image") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageReadError("decompression bomb (too many pixels)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        reason = "truncated" if "truncated" in str(exc) else str(exc).splitlines()[0][:100]
        raise ImageReadError(reason) from None


def read_image(path: str, channels: int, size: Tuple[int, int]) -> np.ndarray:
    """Decode ``path`` into a ``(height, width, channels)`` uint8 array of ``size``; raise :class:`ImageReadError`."""
    return _fit(decode_full(path, channels, at_least=max(size)), channels, size)


def _fit(arr: np.ndarray, channels: int, size: Tuple[int, int]) -> np.ndarray:
    height, width = size
    if arr.shape[:2] != (height, width):
        shrink = arr.shape[0] > height or arr.shape[1] > width
        arr = cv2.resize(arr, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    return arr.reshape(height, width, channels)


def to_array(image, channels: int, size: Tuple[int, int]) -> np.ndarray:
    """A path, a PIL image or a uint8 numpy array (``(H, W)`` gray, ``(H, W, 3)`` RGB or ``(H, W, 4)`` RGBA) as a
    ``(height, width, channels)`` uint8 array of ``size``, converted exactly as files are for training."""
    if isinstance(image, (str, os.PathLike)):
        return read_image(os.fspath(image), channels, size)
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3, 4)):
            raise ValueError(f"a numpy image must be uint8 (H, W), (H, W, 1), (H, W, 3) RGB or (H, W, 4) RGBA; got "
                             f"{image.dtype} {image.shape}")
        image = Image.fromarray(image[..., 0] if image.ndim == 3 and image.shape[2] == 1 else image)
    if not isinstance(image, Image.Image):
        raise TypeError(f"an image must be a path, a PIL image or a numpy array; got {type(image).__name__}")
    return _fit(np.array(_to_mode(ImageOps.exif_transpose(image), channels)), channels, size)


def image_size(cfg: dict) -> tuple:
    """``target_img_size`` as an ``(height, width)`` tuple."""
    size = cfg["target_img_size"]
    return (size, size) if isinstance(size, int) else tuple(size)
