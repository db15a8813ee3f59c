"""Colour transforms of whole float batches, a factor per image (see pipeline.data.batch_augment).

Images are (B, 3, H, W) floats in [0, 1]; every op clips to [0, 1] as the uint8 ops of
albumentations saturate. ColorJitter applies brightness, contrast, saturation, then hue (the
order torchvision's functional ops use; albumentations shuffles it per image).
"""

from __future__ import annotations

import functools

import torch

GRAY_WEIGHTS = (0.299, 0.587, 0.114)


def between(u: torch.Tensor, low: float, high: float) -> torch.Tensor:
    return low + (high - low) * u


def per_image(factor: torch.Tensor) -> torch.Tensor:
    return factor.view(-1, 1, 1, 1)


@functools.cache
def device_constant(values: tuple[float, ...], device: torch.device) -> torch.Tensor:
    """A (1, C, 1, 1) float32 constant on `device`, copied there once: a copy from the host
    inside the training loop would wait for every step queued on the GPU."""
    return torch.tensor(values, dtype=torch.float32).view(1, -1, 1, 1).to(device)


def gray(images: torch.Tensor) -> torch.Tensor:
    return (images * device_constant(GRAY_WEIGHTS, images.device)).sum(1, keepdim=True)


def adjust_brightness(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return (images * per_image(factor)).clamp(0, 1)


def adjust_contrast(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend with each image's mean grey level."""
    mean = gray(images).mean((2, 3), keepdim=True)
    return ((images - mean) * per_image(factor) + mean).clamp(0, 1)


def adjust_saturation(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend with each pixel's grey level."""
    grey = gray(images)
    return ((images - grey) * per_image(factor) + grey).clamp(0, 1)


def rgb_to_hsv(images: torch.Tensor) -> torch.Tensor:
    red, green, blue = images.unbind(1)
    value, _ = images.max(1)
    chroma = value - images.min(1)[0]
    flat = chroma == 0
    saturation = chroma / torch.where(value == 0, 1.0, value)
    divisor = torch.where(flat, 1.0, chroma)
    hue = torch.where(
        value == red,
        (green - blue) / divisor,
        torch.where(value == green, 2 + (blue - red) / divisor, 4 + (red - green) / divisor),
    )
    hue = torch.where(flat, 0.0, hue / 6).remainder(1.0)
    return torch.stack([hue, saturation, value], 1)


def hsv_to_rgb(images: torch.Tensor) -> torch.Tensor:
    hue, saturation, value = images.unbind(1)
    # The standard piecewise-linear form: channel n is v - v s clamp(min(k, 4 - k), 0, 1),
    # with k = (n + 6 h) mod 6 for n = 5 (red), 3 (green), 1 (blue).
    channels = []
    for n in (5, 3, 1):
        k = (n + hue * 6).remainder(6)
        channels.append(value - value * saturation * torch.minimum(k, 4 - k).clamp(0, 1))
    return torch.stack(channels, 1)


def adjust_hue(images: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate each image's hue by `shift` turns (in [-0.5, 0.5])."""
    hsv = rgb_to_hsv(images)
    hue = (hsv[:, 0] + shift.view(-1, 1, 1)).remainder(1.0)
    return hsv_to_rgb(torch.stack([hue, hsv[:, 1], hsv[:, 2]], 1)).clamp(0, 1)


def colour_jitter(images: torch.Tensor, args: dict, u: torch.Tensor) -> torch.Tensor:
    """`args`: the (low, high) factors of brightness, contrast and saturation, hue's shifts."""
    images = adjust_brightness(images, between(u[:, 1], *args["brightness"]))
    images = adjust_contrast(images, between(u[:, 2], *args["contrast"]))
    images = adjust_saturation(images, between(u[:, 3], *args["saturation"]))
    return adjust_hue(images, between(u[:, 4], *args["hue"]))


def brightness_contrast(images: torch.Tensor, args: dict, u: torch.Tensor) -> torch.Tensor:
    """albumentations' RandomBrightnessContrast: x * (1 + contrast) + brightness (by the max)."""
    alpha = 1 + between(u[:, 1], *args["contrast"])
    beta = between(u[:, 2], *args["brightness"])
    return (images * per_image(alpha) + per_image(beta)).clamp(0, 1)


COLOUR_OPS = {"ColorJitter": colour_jitter, "RandomBrightnessContrast": brightness_contrast}


def colour_step(name: str, args: dict, p: float, images: torch.Tensor, u: torch.Tensor):
    """Transform `name` where it fires (u[:, 0] < p), with its factors drawn from u[:, 1:]."""
    changed = COLOUR_OPS[name](images, args, u)
    return torch.where(per_image(u[:, 0] < p), changed, images)
