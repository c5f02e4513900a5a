"""Built-in real datasets written out as MNIST-style class folders (train/val/test).

    python -m easycls.datasets digits data/digits
    python -m easycls.datasets idx /usr/share/datasets/fashion-mnist data/fashion_mnist
    python -m easycls.datasets fonts data/font_digits
    python -m easycls.datasets mosaics data/mosaics

``digits`` is scikit-learn's bundled 1,797 handwritten 8x8 digits (no download). ``idx`` reads any MNIST-format
set of IDX ``.gz`` files, such as Fashion-MNIST from the Debian package ``dataset-fashion-mnist``. ``fonts``
renders MNIST-style 28x28 digits in the fonts matplotlib ships, warped like handwriting, with the test split in
fonts that train and val never use: a second digit set, other than the built-in one, for checking a recipe.
``mosaics`` is a multi-label set made of the same real digits: 2x2 mosaics holding 1 to 4 of them, labelled with
the digits present, as images plus labels CSVs (train and val share one with a split column; test has its own).
"""
from __future__ import annotations

import argparse
import gzip
import logging
import os
import struct
import sys

import cv2
import numpy as np
from sklearn.model_selection import train_test_split

from easycls.core.errors import DataError, exit_code

log = logging.getLogger(__name__)
FASHION_CLASSES = ["T-shirt_top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle_boot"]
IDX_FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
             "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}


def write_split(images: np.ndarray, labels: np.ndarray, classes: list[str], folder: str) -> None:
    """Write ``images`` as ``folder/<class>/<index>.png``."""
    for name in classes:
        os.makedirs(os.path.join(folder, name), exist_ok=True)
    for i, (image, label) in enumerate(zip(images, labels)):
        cv2.imwrite(os.path.join(folder, classes[label], f"{i:05d}.png"), image)


def write_dataset(out: str, train_x, train_y, test_x, test_y, classes: list[str], val_fraction: float,
                  seed: int) -> None:
    """Split a seeded, stratified val set off train and write train/val/test class folders under ``out``."""
    train_x, val_x, train_y, val_y = train_test_split(train_x, train_y, test_size=val_fraction, random_state=seed,
                                                      stratify=train_y)
    for split, (x, y) in {"train": (train_x, train_y), "val": (val_x, val_y), "test": (test_x, test_y)}.items():
        write_split(x, y, classes, os.path.join(out, split))
    log.info("wrote %d train, %d val and %d test images in %d classes to %s", len(train_y), len(val_y),
             len(test_y), len(classes), out)


def make_digits(out: str, val_fraction: float = 0.15, test_fraction: float = 0.15, seed: int = 0) -> None:
    """scikit-learn's handwritten digits (8x8, 16 grey levels) as 8-bit PNG class folders."""
    from sklearn.datasets import load_digits
    digits = load_digits()
    images = (digits.images * (255.0 / 16.0)).round().astype(np.uint8)
    train_x, test_x, train_y, test_y = train_test_split(images, digits.target, test_size=test_fraction,
                                                        random_state=seed, stratify=digits.target)
    write_dataset(out, train_x, train_y, test_x, test_y, [str(d) for d in range(10)],
                  val_fraction / (1 - test_fraction), seed)


# matplotlib's own fonts, so every installation renders the same set; the last four are the test fonts.
FONTS = ["DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf", "DejaVuSansMono.ttf",
         "DejaVuSansMono-Bold.ttf", "DejaVuSansMono-Oblique.ttf", "DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf",
         "DejaVuSerif-Italic.ttf", "STIXGeneral.ttf", "STIXGeneralBol.ttf", "STIXGeneralItalic.ttf", "cmr10.ttf",
         "cmb10.ttf", "cmtt10.ttf", "DejaVuSans-BoldOblique.ttf", "DejaVuSerif-BoldItalic.ttf",
         "STIXGeneralBolIta.ttf", "cmss10.ttf"]
TEST_FONTS = 4


def _warp_like_handwriting(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random rotation, shear, scale and stroke width, then a smooth elastic wobble."""
    size = image.shape[0]
    matrix = cv2.getRotationMatrix2D((size / 2, size / 2), rng.uniform(-12, 12), rng.uniform(0.8, 1.1))
    matrix[0, 1] += rng.uniform(-0.3, 0.3)
    image = cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR)
    stroke = int(rng.integers(-1, 3))
    if stroke:
        kernel = np.ones((abs(stroke) + 1, abs(stroke) + 1), np.uint8)
        image = cv2.dilate(image, kernel) if stroke > 0 else cv2.erode(image, kernel)
    grid = np.mgrid[0:size, 0:size].astype(np.float32)
    wobble = [cv2.GaussianBlur(rng.uniform(-1, 1, (size, size)).astype(np.float32), (0, 0), 8) * 40
              for _ in range(2)]
    return cv2.remap(image, grid[1] + wobble[0], grid[0] + wobble[1], cv2.INTER_LINEAR)


def _mnist_frame(image: np.ndarray) -> np.ndarray:
    """As MNIST was made: the digit fitted into 20x20, then centred by its centre of mass in 28x28."""
    ys, xs = np.nonzero(image > 20)
    digit = image[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
    scale = 20.0 / max(digit.shape)
    digit = cv2.resize(digit, (max(1, round(digit.shape[1] * scale)), max(1, round(digit.shape[0] * scale))),
                       interpolation=cv2.INTER_AREA)
    out = np.zeros((28, 28), np.uint8)
    cy, cx = np.array(np.nonzero(digit)).mean(1) if digit.any() else (10, 10)
    top = int(np.clip(round(14 - cy), 0, 28 - digit.shape[0]))
    left = int(np.clip(round(14 - cx), 0, 28 - digit.shape[1]))
    out[top:top + digit.shape[0], left:left + digit.shape[1]] = digit
    return out


def render_digits(fonts: list[str], per_font: int, seed: int) -> tuple:
    """``per_font`` images of each digit in each font: ``(images (N, 28, 28) uint8, labels)``."""
    import matplotlib
    from PIL import Image, ImageDraw, ImageFont
    rng = np.random.default_rng(seed)
    folder = os.path.join(os.path.dirname(matplotlib.__file__), "mpl-data", "fonts", "ttf")
    images, labels = [], []
    for name in fonts:
        font = ImageFont.truetype(os.path.join(folder, name), 40)
        for digit in range(10):
            canvas = Image.new("L", (64, 64), 0)
            ImageDraw.Draw(canvas).text((32, 32), str(digit), fill=255, font=font, anchor="mm")
            for _ in range(per_font):
                images.append(_mnist_frame(_warp_like_handwriting(np.asarray(canvas), rng)))
                labels.append(digit)
    return np.stack(images), np.array(labels)


def make_font_digits(out: str, per_font: int = 40, val_fraction: float = 0.15, seed: int = 0) -> None:
    """Rendered digits: train and val in the first fonts, test in the last ``TEST_FONTS`` fonts."""
    train_x, train_y = render_digits(FONTS[:-TEST_FONTS], per_font, seed)
    test_x, test_y = render_digits(FONTS[-TEST_FONTS:], per_font, seed + 1)
    write_dataset(out, train_x, train_y, test_x, test_y, [str(d) for d in range(10)], val_fraction, seed)


def _mosaics(digits: np.ndarray, labels: np.ndarray, count: int, rng: np.random.Generator):
    """``count`` 16x16 mosaics: 1 to 4 of the 8x8 ``digits`` in random cells of a 2x2 grid, and each mosaic's 0/1
    row over the 10 digits."""
    images = np.zeros((count, 16, 16), np.uint8)
    present = np.zeros((count, 10), np.int64)
    for i in range(count):
        cells = rng.choice(4, size=rng.integers(1, 5), replace=False)
        for cell, pick in zip(cells, rng.integers(0, len(digits), len(cells))):
            top, left = 8 * (cell // 2), 8 * (cell % 2)
            images[i, top:top + 8, left:left + 8] = digits[pick]
            present[i, labels[pick]] = 1
    return images, present


def make_mosaics(out: str, counts=(3000, 600, 1000), one_hot: bool = False, seed: int = 0) -> None:
    """Multi-label mosaics of scikit-learn's real handwritten digits. The digits are first split (stratified,
    70/15/15) so that train, val and test mosaics never share a digit image; then ``out/train/`` holds the train and
    val mosaics with ``out/train.csv`` (image_id,labels,split), and ``out/test/`` the test ones with
    ``out/test.csv`` (image_id,labels). ``one_hot`` writes one 0/1 column per digit instead of ``labels``."""
    from sklearn.datasets import load_digits
    digits = load_digits()
    images = (digits.images * (255.0 / 16.0)).round().astype(np.uint8)
    pool_x, test_x, pool_y, test_y = train_test_split(images, digits.target, test_size=0.15, random_state=seed,
                                                      stratify=digits.target)
    train_x, val_x, train_y, val_y = train_test_split(pool_x, pool_y, test_size=0.15 / 0.85, random_state=seed,
                                                      stratify=pool_y)
    rng = np.random.default_rng(seed)
    parts = {"train": (train_x, train_y), "val": (val_x, val_y), "test": (test_x, test_y)}
    rows = {"train": [], "test": []}
    for (split, (x, y)), count in zip(parts.items(), counts):
        mosaics, present = _mosaics(x, y, count, rng)
        folder = "test" if split == "test" else "train"
        os.makedirs(os.path.join(out, folder), exist_ok=True)
        for i, (image, row) in enumerate(zip(mosaics, present)):
            name = f"{split}_{i:05d}.png"
            cv2.imwrite(os.path.join(out, folder, name), image)
            labels = [str(v) for v in row] if one_hot else ["|".join(str(d) for d in np.flatnonzero(row))]
            rows[folder].append([name] + labels + ([split] if folder == "train" else []))
    columns = [str(d) for d in range(10)] if one_hot else ["labels"]
    for folder, extra in (("train", ["split"]), ("test", [])):
        with open(os.path.join(out, f"{folder}.csv"), "w") as handle:
            handle.write("\n".join(",".join(r) for r in [["image_id"] + columns + extra] + rows[folder]) + "\n")
    log.info("wrote %d train, %d val and %d test mosaics of 1-4 real handwritten digits, with train.csv and "
             "test.csv, to %s", *counts, out)


def read_idx(path: str) -> np.ndarray:
    """Read one unsigned-byte IDX file (optionally gzipped) into a numpy array.

    Not torchvision's reader on purpose: ``torchvision.datasets.mnist.read_sn3_pascalvincent_tensor`` is an
    undocumented helper outside ``torchvision.datasets.__all__`` that opens the path with plain ``open`` (its
    ``MNIST`` class unpacks the ``.gz`` files first, checked in torchvision 0.29), and it reports a bad file with a
    bare ``assert``; these files are read straight from the ``.gz``, and a bad one is a :class:`DataError`.
    """
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as handle:
        data = handle.read()
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:
        raise DataError(f"{path} is not an unsigned-byte IDX file")
    shape = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def make_idx(src: str, out: str, classes: list[str] | None = None, val_fraction: float = 1 / 6,
             seed: int = 0) -> None:
    """Write an MNIST-format IDX set from ``src`` as class folders; Fashion-MNIST names are used for it."""
    arrays = {}
    for split, names in IDX_FILES.items():
        for kind, name in zip(("x", "y"), names):
            path = os.path.join(src, name)
            if not os.path.isfile(path) and os.path.isfile(path[:-3]):
                path = path[:-3]
            if not os.path.isfile(path):
                raise DataError(f"{path} not found; expected the four MNIST-format files {IDX_FILES}")
            arrays[split + kind] = read_idx(path)
    if classes is None:
        count = int(arrays["trainy"].max()) + 1
        classes = FASHION_CLASSES if "fashion" in os.path.abspath(src).lower() else [str(i) for i in range(count)]
    write_dataset(out, arrays["trainx"], arrays["trainy"], arrays["testx"], arrays["testy"], classes,
                  val_fraction, seed)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m easycls.datasets", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    digits = sub.add_parser("digits", help="scikit-learn's handwritten digits")
    digits.add_argument("out")
    idx = sub.add_parser("idx", help="an MNIST-format IDX .gz set (MNIST, Fashion-MNIST, ...)")
    idx.add_argument("src")
    idx.add_argument("out")
    idx.add_argument("--classes", help="comma-separated class names (default: Fashion-MNIST's or 0..N-1)")
    idx.add_argument("--val-fraction", type=float, default=1 / 6)
    fonts = sub.add_parser("fonts", help="digits rendered in matplotlib's fonts, warped like handwriting")
    fonts.add_argument("out")
    fonts.add_argument("--per-font", type=int, default=40, help="images of each digit in each font")
    mosaics = sub.add_parser("mosaics", help="multi-label 2x2 mosaics of 1-4 of scikit-learn's digits")
    mosaics.add_argument("out")
    mosaics.add_argument("--counts", type=int, nargs=3, default=[3000, 600, 1000], metavar=("TRAIN", "VAL", "TEST"))
    mosaics.add_argument("--one-hot", action="store_true", help="one 0/1 column per digit instead of labels")
    # digits: the config's default random_seed, so this writes the split a first `python train.py` writes
    for p, seed in ((digits, 42), (idx, 0), (fonts, 0), (mosaics, 0)):
        p.add_argument("--seed", type=int, default=seed, help=f"the seed of the split (default {seed})")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.command == "digits":
        return exit_code(lambda: make_digits(args.out, seed=args.seed))
    if args.command == "fonts":
        return exit_code(lambda: make_font_digits(args.out, args.per_font, seed=args.seed))
    if args.command == "mosaics":
        return exit_code(lambda: make_mosaics(args.out, args.counts, args.one_hot, args.seed))
    classes = args.classes.split(",") if args.classes else None
    return exit_code(lambda: make_idx(args.src, args.out, classes, args.val_fraction, args.seed))


if __name__ == "__main__":
    sys.exit(main())
