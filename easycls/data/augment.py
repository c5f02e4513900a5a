"""Training augmentation of whole batches on the device: random affine levels, RandAugment and TrivialAugment with
ops drawn per image, and random erasing.

Per-image augmentation one image at a time (torchvision's RandAugment on each image) costs 100-300 us per 28 px
image on a CPU, a third of a small model's train step. Here each op runs once per batch, on the images that drew
it, with one magnitude per image: blends and thresholds take a per-image factor, and the geometric ops become one
per-image matrix for a single ``grid_sample`` (14-29 us per image, docs/benchmarks.md). The op list and the
magnitude tables are torchvision's (``RandAugment`` and ``TrivialAugmentWide``), and torchvision's batched
functions compute the grey, equalized and autocontrasted images.
"""
import math
from typing import Callable, Dict, NamedTuple, Optional, Tuple

import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF

POLICIES = ("randaugment", "trivialaugment")


class BatchAugment:
    """Random affine (scale, rotation, shift, optional horizontal flip) applied to a whole batch at once.

    Levels give (relative scale range, degrees, shift as a fraction of the size): 'shift' moves by up to 8%
    (about 2 px at 28 px), the usual recipe for MNIST-like data. Takes uint8 images, returns float in [0, 255].
    """

    LEVELS = {"shift": (0.0, 0.0, 0.08), "light": (0.10, 10.0, 0.10), "strong": (0.20, 20.0, 0.15)}

    def __init__(self, level: str, hflip: bool):
        self.scale, self.degrees, self.shift = self.LEVELS[level]
        self.hflip = hflip

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        n, (h, w) = x.shape[0], x.shape[-2:]
        if n == 0:
            return x
        uniform = lambda a: (torch.rand(n, device=x.device) * 2 - 1) * a  # noqa: E731
        scale = 1 + uniform(self.scale)
        angle = uniform(math.radians(self.degrees))
        flip = _flip_signs(n, x.device) if self.hflip else torch.ones(n, device=x.device)
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        # In normalised coordinates a rotation of a non-square image needs the aspect ratio on its off-diagonal.
        theta = torch.stack([torch.stack([cos * flip, -sin * (h / w), uniform(2 * self.shift)], 1),
                             torch.stack([sin * flip * (w / h), cos, uniform(2 * self.shift)], 1)], 1)
        grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _flip_signs(n: int, device) -> torch.Tensor:
    return torch.where(torch.rand(n, device=device) < 0.5, -1.0, 1.0)


# ------------------------------------------------------------------ the ops: (uint8 images, one magnitude each)
def _blend(x: torch.Tensor, degenerate, factor: torch.Tensor) -> torch.Tensor:
    """torchvision's blend, ``factor * x + (1 - factor) * degenerate``, with one factor per image."""
    f = factor.view(-1, 1, 1, 1)
    return (f * x.float() + (1 - f) * degenerate).clamp_(0, 255).to(torch.uint8)


def _grey(x: torch.Tensor) -> torch.Tensor:
    return x if x.shape[1] == 1 else TF.rgb_to_grayscale(x)


def _brightness(x, m):
    return _blend(x, 0.0, 1 + m)


def _color(x, m):
    return x if x.shape[1] == 1 else _blend(x, _grey(x).float(), 1 + m)


def _contrast(x, m):
    return _blend(x, _grey(x).float().mean(dim=(1, 2, 3), keepdim=True), 1 + m)


def _sharpness(x, m):
    """Blend with torchvision's blurred image: the 3x3 kernel of 1s with 5 at the centre, over 13, rounded, inside
    a border of the image's own pixels. A box mean is the same sum and much faster than a convolution here."""
    x = x.float()
    blurred = x.clone()
    if x.shape[-1] > 2 and x.shape[-2] > 2:
        box = F.avg_pool2d(x, 3, stride=1) * 9
        blurred[..., 1:-1, 1:-1] = ((box + 4 * x[..., 1:-1, 1:-1]) / 13).round_()
    return _blend(x, blurred, 1 + m)


def _posterize(x, bits):
    mask = ((1 << bits.to(torch.int32)) - 1) << (8 - bits.to(torch.int32))
    return x & mask.to(torch.uint8).view(-1, 1, 1, 1)


def _solarize(x, threshold):
    return torch.where(x >= threshold.view(-1, 1, 1, 1), 255 - x, x)


def _warp(x: torch.Tensor, inverse: torch.Tensor) -> torch.Tensor:
    """Warp by per-image inverse matrices ``(N, 2, 3)`` in pixel units about the image centre, as torchvision's
    ``affine`` does (nearest neighbour, black fill)."""
    h, w = x.shape[-2:]
    theta = inverse.clone()
    theta[:, 0, 1] *= h / w
    theta[:, 1, 0] *= w / h
    theta[:, 0, 2] /= w / 2
    theta[:, 1, 2] /= h / 2
    grid = F.affine_grid(theta, [x.shape[0], x.shape[1], h, w], align_corners=False)
    return F.grid_sample(x.float(), grid, mode="nearest", padding_mode="zeros", align_corners=False).to(torch.uint8)


def _matrices(m: torch.Tensor) -> torch.Tensor:
    identity = torch.zeros(len(m), 2, 3, device=m.device)
    identity[:, 0, 0] = identity[:, 1, 1] = 1
    return identity


# The geometric ops give inverse matrices (output pixel -> input pixel, about the centre), so that one
# ``grid_sample`` moves every image that drew any of them.
def _shear_x(m, h, w):  # torchvision shears about the top-left corner
    inverse = _matrices(m)
    inverse[:, 0, 1], inverse[:, 0, 2] = m, m * h / 2
    return inverse


def _shear_y(m, h, w):
    inverse = _matrices(m)
    inverse[:, 1, 0], inverse[:, 1, 2] = m, m * w / 2
    return inverse


def _translate_x(m, h, w):
    inverse = _matrices(m)
    inverse[:, 0, 2] = -m.trunc()  # whole pixels, as torchvision's int(magnitude)
    return inverse


def _translate_y(m, h, w):
    inverse = _matrices(m)
    inverse[:, 1, 2] = -m.trunc()
    return inverse


def _rotate(degrees, h, w):  # counter-clockwise, about the centre
    angle = torch.deg2rad(degrees)
    inverse = _matrices(degrees)
    inverse[:, 0, 0], inverse[:, 0, 1] = torch.cos(angle), -torch.sin(angle)
    inverse[:, 1, 0], inverse[:, 1, 1] = torch.sin(angle), torch.cos(angle)
    return inverse


class Op(NamedTuple):
    """An op: ``apply(images, magnitudes)`` for a pixel op, or ``matrix(magnitudes, h, w)`` (inverse matrices) for
    a geometric one; ``magnitudes(bins, h, w)``, the magnitude of each bin (None: the op has none); and whether
    each image draws a random sign."""

    apply: Optional[Callable[[torch.Tensor, torch.Tensor], torch.Tensor]]
    magnitudes: Optional[Callable[[int, int, int], torch.Tensor]]
    signed: bool = False
    matrix: Optional[Callable[[torch.Tensor, int, int], torch.Tensor]] = None

    def __call__(self, x: torch.Tensor, m: Optional[torch.Tensor]) -> torch.Tensor:
        """The op on a batch, one magnitude per image."""
        return self.apply(x, m) if self.matrix is None else _warp(x, self.matrix(m, *x.shape[-2:]))


def _identity(x, m):
    return x


def _linspace(high: float) -> Callable[[int, int, int], torch.Tensor]:
    return lambda bins, h, w: torch.linspace(0.0, high, bins)


def _policy(shear, translate, degrees, enhance, posterize_span) -> Dict[str, Op]:
    return {
        "Identity": Op(_identity, None),
        "ShearX": Op(None, _linspace(shear), True, _shear_x),
        "ShearY": Op(None, _linspace(shear), True, _shear_y),
        "TranslateX": Op(None, lambda bins, h, w: torch.linspace(0.0, translate(w), bins), True, _translate_x),
        "TranslateY": Op(None, lambda bins, h, w: torch.linspace(0.0, translate(h), bins), True, _translate_y),
        "Rotate": Op(None, _linspace(degrees), True, _rotate),
        "Brightness": Op(_brightness, _linspace(enhance), True),
        "Color": Op(_color, _linspace(enhance), True),
        "Contrast": Op(_contrast, _linspace(enhance), True),
        "Sharpness": Op(_sharpness, _linspace(enhance), True),
        "Posterize": Op(_posterize, lambda bins, h, w: 8 - (torch.arange(bins) / ((bins - 1) / posterize_span))
                        .round()),
        "Solarize": Op(_solarize, lambda bins, h, w: torch.linspace(255.0, 0.0, bins)),
        "AutoContrast": Op(lambda x, m: TF.autocontrast(x), None),
        "Equalize": Op(lambda x, m: TF.equalize(x), None),
    }


# torchvision's two spaces: RandAugment's (translations up to 150/331 of the side) and TrivialAugmentWide's
# (shears up to 0.99, rotations up to 135 degrees, translations up to 32 px).
RANDAUGMENT_OPS = _policy(0.3, lambda side: 150.0 / 331.0 * side, 30.0, 0.9, 4)
TRIVIALAUGMENT_OPS = _policy(0.99, lambda side: 32.0, 135.0, 0.99, 6)


class PolicyAugment:
    """RandAugment (``num_ops`` ops in a row at bin ``magnitude``) or TrivialAugmentWide (one op at a random bin),
    with the ops, bins and signs drawn per image; then an optional horizontal flip. uint8 in, float out."""

    def __init__(self, policy: str, hflip: bool = False, num_ops: int = 2, magnitude: int = 9, bins: int = 31):
        if policy not in POLICIES:
            raise ValueError(f"unknown augmentation policy {policy!r}; allowed: {', '.join(POLICIES)}")
        if not 0 <= magnitude < bins:
            raise ValueError(f"magnitude {magnitude} is not a bin of {bins}: allowed 0..{bins - 1}")
        self.trivial = policy == "trivialaugment"
        self.ops = list((TRIVIALAUGMENT_OPS if self.trivial else RANDAUGMENT_OPS).values())
        self.layers = 1 if self.trivial else num_ops
        self.magnitude, self.bins, self.hflip = magnitude, bins, hflip
        self.tables, self._size = [], None

    def _tables(self, x: torch.Tensor) -> None:
        """Each op's magnitude per bin, for this image size and device (made once)."""
        size = (*x.shape[-2:], x.device)
        if size != self._size:
            self.tables = [None if op.magnitudes is None else op.magnitudes(self.bins, *size[:2]).to(x.device)
                           for op in self.ops]
            self._size = size

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        for _ in range(self.layers):
            x = self.apply(x, *self.draw(len(x), x.device))
        return random_hflip(x.float()) if self.hflip else x.float()

    def draw(self, n: int, device) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One layer's random choices for ``n`` images: op index, magnitude bin and sign (+-1)."""
        choice = torch.randint(len(self.ops), (n,), device=device)
        level = (torch.randint(self.bins, (n,), device=device) if self.trivial
                 else torch.full((n,), self.magnitude, device=device))
        return choice, level, _flip_signs(n, device)

    def apply(self, x: torch.Tensor, choice: torch.Tensor, level: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
        """One layer: image ``i`` gets op ``choice[i]`` at bin ``level[i]``, times ``sign[i]`` for a signed op.
        Each pixel op runs once on the images that drew it, and the geometric ops share one warp."""
        self._tables(x)
        out, moved, matrices = x.clone(), [], []
        for k in choice.unique().tolist():
            op, rows = self.ops[k], (choice == k).nonzero().squeeze(1)
            if op.apply is _identity:
                continue
            m = None
            if op.magnitudes is not None:
                m = self.tables[k][level[rows]] * (sign[rows] if op.signed else 1)
            if op.matrix is None:
                out[rows] = op.apply(x[rows], m)
            else:
                moved.append(rows)
                matrices.append(op.matrix(m, *x.shape[-2:]))
        if moved:
            rows = torch.cat(moved)
            out[rows] = _warp(x[rows], torch.cat(matrices))
        return out


def random_hflip(x: torch.Tensor) -> torch.Tensor:
    """Mirror a random half of the batch (float in, float out)."""
    return torch.where(_flip_signs(len(x), x.device).view(-1, 1, 1, 1) < 0, x.flip(-1), x)


def build_augment(level: str, hflip: bool) -> Optional[Callable[[torch.Tensor], torch.Tensor]]:
    """The train-time augmentation for ``augment`` and ``hflip``: uint8 batch -> float batch in [0, 255], or None
    when there is none."""
    if level in POLICIES:
        return PolicyAugment(level, hflip)
    if level != "none":
        return BatchAugment(level, hflip)
    return (lambda x: random_hflip(x.float())) if hflip else None


def build_erasing(probability: float, device):
    """timm's RandomErasing (per image, random-normal pixels, on the normalised batch), or None when 0."""
    if not probability:
        return None
    from timm.data.random_erasing import RandomErasing
    return RandomErasing(probability, mode="pixel", device=str(device))
