"""easycls.augment: the batched ops equal torchvision's op on each image, every image draws its own ops, and random
erasing erases."""
import math

import pytest
import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from easycls.data.augment import (
    RANDAUGMENT_OPS,
    TRIVIALAUGMENT_OPS,
    BatchAugment,
    PolicyAugment,
    build_augment,
    build_erasing,
)
from easycls.data.loaders import Preprocessor

NEAREST = InterpolationMode.NEAREST


def torchvision_op(name: str, image: torch.Tensor, m: float) -> torch.Tensor:
    """torchvision's op for one magnitude, as RandAugment and TrivialAugmentWide apply it."""
    affine = dict(angle=0.0, translate=[0, 0], scale=1.0, shear=[0.0, 0.0], interpolation=NEAREST, fill=0)
    if name == "ShearX":
        return TF.affine(image, **{**affine, "shear": [math.degrees(math.atan(m)), 0.0]}, center=[0, 0])
    if name == "ShearY":
        return TF.affine(image, **{**affine, "shear": [0.0, math.degrees(math.atan(m))]}, center=[0, 0])
    if name == "TranslateX":
        return TF.affine(image, **{**affine, "translate": [int(m), 0]})
    if name == "TranslateY":
        return TF.affine(image, **{**affine, "translate": [0, int(m)]})
    return {"Identity": lambda: image, "Rotate": lambda: TF.rotate(image, m, interpolation=NEAREST, fill=0),
            "Brightness": lambda: TF.adjust_brightness(image, 1 + m),
            "Color": lambda: TF.adjust_saturation(image, 1 + m),
            "Contrast": lambda: TF.adjust_contrast(image, 1 + m),
            "Sharpness": lambda: TF.adjust_sharpness(image, 1 + m),
            "Posterize": lambda: TF.posterize(image, int(m)), "Solarize": lambda: TF.solarize(image, m),
            "AutoContrast": lambda: TF.autocontrast(image), "Equalize": lambda: TF.equalize(image)}[name]()


def photos(n=6, channels=3, size=(20, 24)):
    """Smooth images with structure (a gradient, a bright square), so geometric and colour ops change them."""
    g = torch.Generator().manual_seed(0)
    h, w = size
    base = torch.linspace(0, 200, w).expand(h, w)
    images = []
    for i in range(n):
        img = base.clone()
        img[3 + i:9 + i, 5:12] = 250
        noise = torch.randint(0, 40, (channels, h, w), generator=g)
        images.append((img + noise).clamp(0, 255))
    return torch.stack(images).to(torch.uint8)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("space", ["randaugment", "trivialaugment"])
@pytest.mark.parametrize("name", list(RANDAUGMENT_OPS))
def test_each_batched_op_equals_torchvision_per_image(name, space, channels):
    """Each image of the batch gets its own magnitude (both signs, several bins); each result equals torchvision's
    op on that image alone: to 1 grey level (blends are computed in another order), and for the geometric ops in
    99.5% of the pixels (a nearest-neighbour tie may round to the other pixel)."""
    ops = RANDAUGMENT_OPS if space == "randaugment" else TRIVIALAUGMENT_OPS
    op = ops[name]
    x = photos(channels=channels)
    if op.magnitudes is None:
        m = None
        expected = [torchvision_op(name, img, 0.0) for img in x]
    else:
        table = op.magnitudes(31, *x.shape[-2:])
        bins = torch.tensor([0, 5, 9, 17, 25, 30])
        m = table[bins] * (torch.tensor([1, -1, 1, -1, 1, -1]) if op.signed else 1)
        expected = [torchvision_op(name, img, float(v)) for img, v in zip(x, m)]
    got = op(x, m)
    assert got.dtype == torch.uint8 and got.shape == x.shape
    for i, want in enumerate(expected):
        diff = (got[i].int() - want.int()).abs()
        if name.startswith(("Shear", "Translate", "Rotate")):  # nearest neighbour: ties may round the other way
            assert (diff == 0).float().mean() > 0.995, f"{name} image {i}"
        else:
            assert diff.max() <= 1, f"{name} image {i}: max difference {int(diff.max())}"


@pytest.mark.parametrize("space", ["randaugment", "trivialaugment"])
def test_op_tables_are_torchvisions(space):
    """The same ops in the same order, the same magnitude per bin and the same signed flags."""
    from torchvision.transforms import RandAugment, TrivialAugmentWide
    ours = RANDAUGMENT_OPS if space == "randaugment" else TRIVIALAUGMENT_OPS
    theirs = (RandAugment()._augmentation_space(31, (20, 24)) if space == "randaugment"
              else TrivialAugmentWide()._augmentation_space(31))
    assert list(ours) == list(theirs)
    for name, (magnitudes, signed) in theirs.items():
        op = ours[name]
        if magnitudes.ndim == 0:
            assert op.magnitudes is None and not signed
        else:
            assert torch.allclose(op.magnitudes(31, 20, 24), magnitudes.float()) and op.signed == signed, name


@pytest.mark.parametrize("space", ["randaugment", "trivialaugment"])
def test_a_layer_gives_each_image_its_own_op_as_torchvision_would(space):
    """One layer with every op drawn, at several bins and both signs: each image equals torchvision's op at its
    own magnitude (the geometric images share one warp, so this also checks rows meet their own matrices)."""
    aug = PolicyAugment(space)
    names = list(RANDAUGMENT_OPS)
    x = photos(n=3 * len(names), channels=3, size=(18, 26))
    choice = torch.arange(len(x)) % len(names)
    level = torch.tensor([0, 9, 30]).repeat_interleave(len(names))
    sign = torch.tensor([1.0, -1.0]).repeat(len(x) // 2 + 1)[: len(x)]
    out = aug.apply(x, choice, level, sign)
    for i in range(len(x)):
        k = int(choice[i])
        op = aug.ops[k]
        m = 0.0 if op.magnitudes is None else float(aug.tables[k][level[i]] * (sign[i] if op.signed else 1))
        diff = (out[i].int() - torchvision_op(names[k], x[i], m).int()).abs()
        assert (diff <= 1).float().mean() > 0.995, f"image {i}: {names[k]} at {m}"


@pytest.mark.parametrize("space", ["randaugment", "trivialaugment"])
def test_policy_draws_ops_per_image_and_is_seeded(space):
    """Copies of one image come out different within a batch (per-image ops), and a seed repeats a batch."""
    aug = PolicyAugment(space)
    x = photos(1).repeat(64, 1, 1, 1)
    torch.manual_seed(3)
    a = aug(x)
    torch.manual_seed(3)
    b = aug(x)
    assert a.dtype == torch.float32 and a.shape == x.shape and torch.equal(a, b)
    distinct = {tuple(img.flatten().tolist()) for img in a}
    assert len(distinct) > 20
    assert aug(x[:0]).shape == (0, 3, 20, 24) and aug(x[:1]).shape == (1, 3, 20, 24)


def test_policy_hflip_mirrors_about_half():
    x = photos(1, channels=1).repeat(400, 1, 1, 1)
    aug = PolicyAugment("randaugment", hflip=True)
    aug.ops = [RANDAUGMENT_OPS["Identity"]]  # isolate the flip
    torch.manual_seed(0)
    out = aug(x)
    flipped = sum(torch.equal(img, x[0].flip(-1).float()) for img in out)
    assert 150 < flipped < 250 and flipped + sum(torch.equal(img, x[0].float()) for img in out) == 400


def test_affine_rotation_keeps_non_square_images_undistorted(monkeypatch):
    """A rotation by 90 degrees of a 12x20 image equals torchvision's (no stretch from the aspect ratio)."""
    aug = BatchAugment("light", hflip=False)
    aug.scale = aug.shift = 0.0
    aug.degrees = 90.0
    monkeypatch.setattr(torch, "rand", lambda n, device=None: torch.ones(n))  # the largest angle, +90
    x = photos(2, channels=1, size=(12, 20))
    out = aug(x)
    ref = [TF.rotate(x.float(), angle, interpolation=InterpolationMode.BILINEAR) for angle in (90.0, -90.0)]
    assert min(float((out - r).abs().max()) for r in ref) < 1.0


def test_build_augment_levels_and_none():
    assert build_augment("none", False) is None
    assert isinstance(build_augment("light", True), BatchAugment)
    assert isinstance(build_augment("trivialaugment", False), PolicyAugment)
    x = photos(200, channels=1)
    torch.manual_seed(0)
    out = build_augment("none", True)(x)  # hflip alone mirrors images, nothing else
    mirrored = [torch.equal(o, img.flip(-1).float()) for o, img in zip(out, x)]
    kept = [torch.equal(o, img.float()) for o, img in zip(out, x)]
    assert all(m or k for m, k in zip(mirrored, kept)) and 60 < sum(mirrored) < 140
    with pytest.raises(ValueError, match="allowed: randaugment, trivialaugment"):
        PolicyAugment("autoaugment")
    with pytest.raises(ValueError, match="allowed 0..30"):
        PolicyAugment("randaugment", magnitude=31)
    assert build_augment("light", False)(x[:0]).shape == (0, 1, 20, 24)


def test_random_erasing_in_the_preprocessor():
    """Erasing acts on the normalised training batch only, on about the given share of images: one rectangle each,
    of random normal pixels."""
    import random
    x = torch.full((200, 1, 16, 16), 128, dtype=torch.uint8)
    pre = Preprocessor([0.5], [0.25], 1, torch.device("cpu"), channels_last=True, erase=build_erasing(0.5, "cpu"))
    random.seed(0)
    out = pre(x, train=True)
    plain = pre(x, train=False)
    changed = (out - plain).abs() > 0
    erased = [i for i in range(len(x)) if changed[i].any()]
    assert 60 < len(erased) < 140 and out.is_contiguous(memory_format=torch.channels_last)
    for i in erased[:20]:
        rows, cols = changed[i, 0].any(1).nonzero(), changed[i, 0].any(0).nonzero()
        assert changed[i, 0, rows.min():rows.max() + 1, cols.min():cols.max() + 1].float().mean() > 0.95
    pixels = torch.cat([out[i][changed[i]] for i in erased])
    assert abs(float(pixels.mean())) < 0.1 and 0.9 < float(pixels.std()) < 1.1
    assert build_erasing(0.0, "cpu") is None
