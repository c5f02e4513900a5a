"""A tiny photo-like dataset for the first-hour tests: 4 classes of colour JPEGs, 50 wide and 38 high."""
import os

import numpy as np
from PIL import Image

# class -> (colour of the blob, the side it is on): colour and position both matter, as in photos
PHOTO_CLASSES = {"flower_left": ((220, 40, 40), 0), "flower_right": ((220, 40, 40), 1),
                 "leaf_left": ((40, 200, 60), 0), "leaf_right": ((40, 200, 60), 1)}
WIDTH, HEIGHT = 50, 38


def photo(name: str, rng: np.random.Generator) -> Image.Image:
    """A noisy background with a coloured block on the left or right half: class ``name``."""
    colour, side = PHOTO_CLASSES[name]
    pixels = rng.integers(60, 120, (HEIGHT, WIDTH, 3)).astype(np.uint8)
    x, y = 4 + side * 25 + int(rng.integers(0, 4)), int(rng.integers(4, 14))
    pixels[y:y + 20, x:x + 18] = colour
    return Image.fromarray(pixels)


def make_photos(root, train: int = 12, val: int = 4, test: int = 6, seed: int = 0) -> str:
    """``root/{train,val}/<class>/NNNNNN.jpg`` and ``root/test/IMG_NNNN.jpg`` (unlabelled, flat); returns root."""
    rng = np.random.default_rng(seed)
    for split, count in (("train", train), ("val", val)):
        for name in PHOTO_CLASSES:
            os.makedirs(os.path.join(root, split, name), exist_ok=True)
            for i in range(count):
                photo(name, rng).save(os.path.join(root, split, name, f"{i:06d}.jpg"), quality=90)
    os.makedirs(os.path.join(root, "test"), exist_ok=True)
    for i in range(test):
        photo(list(PHOTO_CLASSES)[i % 4], rng).save(os.path.join(root, "test", f"IMG_{i + 1:04d}.jpg"), quality=90)
    return str(root)
