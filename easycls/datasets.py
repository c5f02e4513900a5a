"""Built-in real datasets written out as MNIST-style class folders (train/val/test).

    python -m easycls.datasets digits data/digits
    python -m easycls.datasets idx /usr/share/datasets/fashion-mnist data/fashion_mnist

``digits`` is scikit-learn's bundled 1,797 handwritten 8x8 digits (no download). ``idx`` reads any MNIST-format
set of IDX ``.gz`` files, such as Fashion-MNIST from the Debian package ``dataset-fashion-mnist``.
"""
import argparse
import gzip
import logging
import os
import struct
import sys
from typing import List, Optional

import cv2
import numpy as np
from sklearn.model_selection import train_test_split

from .errors import DataError, exit_code

log = logging.getLogger(__name__)
FASHION_CLASSES = ["T-shirt_top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle_boot"]
IDX_FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
             "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}


def write_split(images: np.ndarray, labels: np.ndarray, classes: List[str], folder: str) -> None:
    """Write ``images`` as ``folder/<class>/<index>.png``."""
    for name in classes:
        os.makedirs(os.path.join(folder, name), exist_ok=True)
    for i, (image, label) in enumerate(zip(images, labels)):
        cv2.imwrite(os.path.join(folder, classes[label], f"{i:05d}.png"), image)


def write_dataset(out: str, train_x, train_y, test_x, test_y, classes: List[str], val_fraction: float,
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


def read_idx(path: str) -> np.ndarray:
    """Read one IDX file (optionally gzipped) into a numpy array."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as handle:
        data = handle.read()
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:
        raise DataError(f"{path} is not an unsigned-byte IDX file")
    shape = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def make_idx(src: str, out: str, classes: Optional[List[str]] = None, val_fraction: float = 1 / 6,
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
    for p in (digits, idx):
        p.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.command == "digits":
        return exit_code(lambda: make_digits(args.out, seed=args.seed))
    classes = args.classes.split(",") if args.classes else None
    return exit_code(lambda: make_idx(args.src, args.out, classes, args.val_fraction, args.seed))


if __name__ == "__main__":
    sys.exit(main())
