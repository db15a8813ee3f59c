"""Augmentation of whole uint8 batches on the training device, one random draw per image.

The device data path (pipeline.data.device_data) feeds the model from a cache held on the device;
this module turns a batch of cached images into normalised model input in a few batched ops:

- every geometric transform of the policy (RandomResizedCrop, flips, Transpose, RandomRotate90,
  Affine) and the fit to `image_size` compose into one 2x3 matrix per image, applied by one
  `grid_sample` (bilinear);
- the colour transforms (ColorJitter, RandomBrightnessContrast) act on the float batch with a
  factor per image;
- then the ImageNet normalisation, in the model's dtype and memory format.

Each image's random numbers are a counter-based hash of (seed, epoch, image index, draw), not a
generator's state, so a batch is a pure function of those, whatever came before: reruns and
resumes see the same stream, on any device, in any batch. The same code runs on CPU tensors.

A transform has a batch form only for the arguments listed in BATCH_FORMS; `batch_form_gap`
says which transform of a policy lacks one, so stage train can fall back to the workers.
"""

from __future__ import annotations

import torch

from pipeline.config.model_settings import TransformSpec
from pipeline.data.batch_colour import COLOUR_OPS, colour_step, device_constant
from pipeline.data.batch_geometry import Step, compose, sample
from pipeline.data.transforms import IMAGENET_MEAN, IMAGENET_STD

# Transform name -> the arguments its batch form honours (others must keep their defaults).
# `size`/`height`/`width` are always `image_size`; interpolation is always bilinear.
BATCH_FORMS = {
    "RandomResizedCrop": {"scale", "ratio", "size", "interpolation", "p"},
    "HorizontalFlip": {"p"},
    "VerticalFlip": {"p"},
    "Transpose": {"p"},
    "RandomRotate90": {"p"},
    "Affine": {"scale", "translate_percent", "rotate", "keep_ratio", "border_mode", "fill", "p"},
    "ColorJitter": {"brightness", "contrast", "saturation", "hue", "p"},
    "RandomBrightnessContrast": {"brightness_limit", "contrast_limit", "brightness_by_max", "p"},
}
DRAWS = 8  # random numbers per transform and image; a transform uses the first few


# -- the counter-based random numbers ------------------------------------------------------

MASK32 = 0xFFFFFFFF


def _mul32(x, constant: int):
    """(x * constant) mod 2**32 for x < 2**32, without overflowing int64 (tensors or ints)."""
    low, high = constant & 0xFFFF, constant >> 16
    return (x * low + (((x * high) & 0xFFFF) << 16)) & MASK32


def mix32(x):
    """A 32-bit integer hash with full avalanche (Wellons' lowbias32), on ints or int64 tensors."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def uniforms(seed: int, epoch: int, indices: torch.Tensor, count: int) -> torch.Tensor:
    """(len(indices), count) float32 numbers in [0, 1), each a hash of (seed, epoch, index, k).

    Exact on every device: integer ops, and 24-bit values that float32 holds exactly.
    """
    key = mix32((seed & MASK32) ^ mix32(((seed >> 32) & MASK32) ^ mix32(epoch & MASK32)))
    per_image = mix32((indices.to(torch.int64) & MASK32) ^ key)
    draws = torch.arange(count, dtype=torch.int64, device=indices.device)
    hashed = mix32(per_image[:, None] ^ _mul32(draws + 1, 0x9E3779B9)[None, :])
    return (hashed >> 8).to(torch.float32) * 2.0**-24


# -- the policy ---------------------------------------------------------------------------


def batch_form_gap(specs: list[TransformSpec]) -> str | None:
    """Why `specs` cannot run as a batch on the device (naming the transform), or None."""
    for spec in specs:
        allowed = BATCH_FORMS.get(spec.name)
        if allowed is None:
            return f"{spec.name} has no batch form (those with one: {', '.join(BATCH_FORMS)})"
        extra = sorted(set(spec.kwargs) - allowed)
        if extra:
            return f"{spec.name}'s batch form does not take {', '.join(extra)}"
        if spec.name == "Affine" and spec.kwargs.get("border_mode", 0) not in (0, 1):
            return "Affine's batch form takes border_mode 0 (fill) or 1 (replicate) only"
        if spec.name == "Affine" and not isinstance(spec.kwargs.get("fill", 0), int | float):
            return "Affine's batch form takes one fill value for all channels"
        if spec.kwargs.get("brightness_by_max", True) is not True:
            return "RandomBrightnessContrast's batch form takes brightness_by_max: true only"
    return None


def normalise(
    images: torch.Tensor, dtype: torch.dtype, memory_format: torch.memory_format
) -> torch.Tensor:
    """[0, 1] images -> ImageNet-normalised model input in `dtype` and `memory_format`."""
    mean = device_constant(IMAGENET_MEAN, images.device)
    std = device_constant(IMAGENET_STD, images.device)
    return ((images - mean) / std).to(dtype).contiguous(memory_format=memory_format)


class BatchAugment:
    """A policy (train.defaults.augment.train or .eval) as batched ops on the device.

    Colour transforms run after the geometric ones whatever their place in the list (they
    commute, except that contrast's mean is then the crop's).
    """

    def __init__(self, specs: list[TransformSpec], image_size: int, keep_aspect: bool, seed: int):
        gap = batch_form_gap(specs)
        if gap:
            raise ValueError(gap)
        self.steps = [Step.from_spec(spec, image_size) for spec in specs]
        self.image_size, self.keep_aspect, self.seed = image_size, keep_aspect, seed
        self.colour = [k for k, step in enumerate(self.steps) if step.name in COLOUR_OPS]
        self.geometric = [k for k in range(len(self.steps)) if k not in self.colour]
        fills = [
            s.args["fill"] for s in self.steps if s.name == "Affine" and not s.args["border_mode"]
        ]
        self.fill = float(fills[0]) if fills else None  # 0: Affine's default fills; 1 replicates

    def __call__(
        self,
        images: torch.Tensor,
        sizes: torch.Tensor,
        indices: torch.Tensor,
        epoch: int,
        dtype: torch.dtype = torch.float32,
        memory_format: torch.memory_format = torch.contiguous_format,
    ) -> torch.Tensor:
        """Augmented, normalised (B, 3, image_size, image_size) input for `images`.

        Args:
            images, sizes: (B, S, S, 3) uint8 cache slots and their (B, 2) heights and widths.
            indices: (B,) the images' indices in their dataset: with (seed, epoch), all that
                their random numbers depend on.
            epoch: the epoch (0 for evaluation).
        """
        u = uniforms(self.seed, epoch, indices, max(1, len(self.steps)) * DRAWS)
        u = u.view(len(images), -1, DRAWS)
        steps = [self.steps[k] for k in self.geometric]
        matrix, offset = compose(steps, u[:, self.geometric])
        batch = sample(images, sizes, matrix, offset, self.image_size, self.keep_aspect, self.fill)
        for k in self.colour:
            step = self.steps[k]
            batch = colour_step(step.name, step.args, step.p, batch, u[:, k])
        return normalise(batch, dtype, memory_format)
