"""Training augmentation for face recognition: horizontal flip and the paper's RandAugment variant.

The variant (USynthFace / IDiff-Face) differs from torchvision's RandAugment in one way: instead of a
single fixed magnitude bin for every op, each op draws its own bin uniformly from
1..`max_magnitude` (of `num_bins` bins), and signed ops flip the sign with probability 0.5.
Op list and magnitude ranges are torchvision's RandAugment space. All randomness comes from an
explicit torch.Generator, so a sample's augmentation depends only on its seed.

torchvision is imported only by the RandAugment ops: importing it loads torch._dynamo (~4 s per job),
which flip-only training does not need.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

RANDAUGMENT_OPS = ("Identity", "ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness", "Color",
                   "Contrast", "Sharpness", "Posterize", "Solarize", "AutoContrast", "Equalize")
_SIGNED = {"ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness", "Color", "Contrast",
           "Sharpness"}


@dataclass(frozen=True)
class RandAugmentSpec:
    """How many ops per image, how many magnitude bins, and the largest bin an op may draw (from 1)."""

    num_ops: int
    num_bins: int
    max_magnitude: int


def op_magnitude(op: str, bin_index: int, num_bins: int, height: int, width: int) -> float:
    """The value of magnitude bin `bin_index` for `op` (torchvision's RandAugment ranges), unsigned."""
    fraction = bin_index / (num_bins - 1)
    if op in ("ShearX", "ShearY"):
        return 0.3 * fraction
    if op == "TranslateX":
        return 150.0 / 331.0 * width * fraction
    if op == "TranslateY":
        return 150.0 / 331.0 * height * fraction
    if op == "Rotate":
        return 30.0 * fraction
    if op in ("Brightness", "Color", "Contrast", "Sharpness"):
        return 0.9 * fraction
    if op == "Posterize":
        return float(8 - round(bin_index / ((num_bins - 1) / 4)))
    if op == "Solarize":
        return 255.0 * (1.0 - fraction)
    return 0.0


def draw_ops(spec: RandAugmentSpec, generator: torch.Generator, height: int, width: int) -> list[tuple[str, float]]:
    """Choose `num_ops` ops, each with its own magnitude bin in 1..max_magnitude and a random sign."""
    chosen = []
    for _ in range(spec.num_ops):
        op = RANDAUGMENT_OPS[int(torch.randint(len(RANDAUGMENT_OPS), (1,), generator=generator))]
        bin_index = int(torch.randint(1, spec.max_magnitude + 1, (1,), generator=generator))
        magnitude = op_magnitude(op, bin_index, spec.num_bins, height, width)
        if int(torch.randint(2, (1,), generator=generator)) and op in _SIGNED:
            magnitude = -magnitude
        chosen.append((op, magnitude))
    return chosen


def apply_op(image: torch.Tensor, op: str, magnitude: float) -> torch.Tensor:
    """Apply one op to a uint8 CHW tensor (nearest interpolation, black fill, as torchvision's default)."""
    import torchvision.transforms.functional as TF
    from torchvision.transforms import InterpolationMode

    nearest = InterpolationMode.NEAREST
    if op in ("ShearX", "ShearY"):
        angle = math.degrees(math.atan(magnitude))
        shear = [angle, 0.0] if op == "ShearX" else [0.0, angle]
        return TF.affine(image, angle=0.0, translate=[0, 0], scale=1.0, shear=shear, interpolation=nearest,
                         center=[0, 0])
    if op in ("TranslateX", "TranslateY"):
        shift = [int(magnitude), 0] if op == "TranslateX" else [0, int(magnitude)]
        return TF.affine(image, angle=0.0, translate=shift, scale=1.0, shear=[0.0, 0.0], interpolation=nearest)
    if op == "Rotate":
        return TF.rotate(image, magnitude, interpolation=nearest)
    if op == "Brightness":
        return TF.adjust_brightness(image, 1.0 + magnitude)
    if op == "Color":
        return TF.adjust_saturation(image, 1.0 + magnitude)
    if op == "Contrast":
        return TF.adjust_contrast(image, 1.0 + magnitude)
    if op == "Sharpness":
        return TF.adjust_sharpness(image, 1.0 + magnitude)
    if op == "Posterize":
        return TF.posterize(image, int(magnitude))
    if op == "Solarize":
        return TF.solarize(image, magnitude)
    if op == "AutoContrast":
        return TF.autocontrast(image)
    if op == "Equalize":
        return TF.equalize(image)
    if op == "Identity":
        return image
    raise ValueError(f"unknown RandAugment op '{op}'")


def augment_face(image: torch.Tensor, generator: torch.Generator, randaugment: RandAugmentSpec | None,
                 flip_probability: float = 0.5) -> torch.Tensor:
    """Random horizontal flip, then (if given) the RandAugment variant, on a uint8 CHW tensor."""
    if float(torch.rand((), generator=generator)) < flip_probability:
        image = image.flip(-1)
    if randaugment is not None:
        _, height, width = image.shape
        for op, magnitude in draw_ops(randaugment, generator, height, width):
            image = apply_op(image, op, magnitude)
    return image
