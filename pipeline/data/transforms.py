"""Albumentations transforms built from params: the augmentation lists and the fit to a square."""

from __future__ import annotations

import inspect
from typing import Any

import albumentations as A
import cv2
import numpy as np
import pydantic
from albumentations.pytorch import ToTensorV2

from pipeline.config.model_settings import ModelParams, TransformSpec
from pipeline.data.images import fit_long_side, pad_to_square
from pipeline.io.console import did_you_mean

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def is_transform(cls: Any) -> bool:
    return inspect.isclass(cls) and issubclass(cls, A.BasicTransform)


def transform_names() -> list[str]:
    """The names albumentations exports as transforms, for spelling hints."""
    return [name for name in dir(A) if is_transform(getattr(A, name))]


def create_transform(spec: TransformSpec, image_size: int) -> A.BasicTransform:
    """Build one albumentations transform from a params entry.

    Transforms that take an output size (`size`, or `height`/`width`) get `image_size`
    unless the entry sets it, so `{name: RandomResizedCrop, scale: [0.6, 1.0]}` is enough.
    """
    cls = getattr(A, spec.name, None)
    if not is_transform(cls):
        hint = did_you_mean(spec.name, transform_names(), n=3)
        raise ValueError(
            f"{spec.name!r} is not an albumentations transform ({hint}see albumentations.ai)"
        )
    kwargs = spec.kwargs
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self", "args", "kwargs"}
    unknown = sorted(set(kwargs) - accepted)
    if unknown:
        raise ValueError(f"{spec.name} has no argument(s) {unknown}; allowed: {sorted(accepted)}")
    for key, value in (
        ("size", (image_size, image_size)),
        ("height", image_size),
        ("width", image_size),
    ):
        if key in accepted and key not in kwargs:
            kwargs[key] = value
    try:
        return cls(**kwargs)
    except ValueError as err:
        # albumentations validates its args with pydantic and re-raises as ValueError.
        if not isinstance(err.__cause__, pydantic.ValidationError):
            raise ValueError(f"{spec.name}: {err}") from None
        details = "; ".join(
            f"{'.'.join(map(str, e['loc']))} = {e.get('input')!r}: {e['msg']}"
            for e in err.__cause__.errors()
        )
        raise ValueError(f"{spec.name}: {details}") from None


class FitSquare(A.DualTransform):
    """`fit_long_side` then `pad_to_square`: the keep_aspect fit, as one transform.

    Bit-identical to A.LongestMaxSize(INTER_AREA) then A.PadIfNeeded(BORDER_REPLICATE), at half
    the per-image overhead of calling two albumentations transforms. Images only: the pipeline
    has no masks, boxes or keypoints. It draws no random numbers.
    """

    def __init__(self, size: int, p: float = 1.0):
        super().__init__(p=p)
        self.size = size

    def apply(self, img: np.ndarray, **params: Any) -> np.ndarray:
        return pad_to_square(fit_long_side(img, self.size), self.size)


def build_transforms(
    params: ModelParams, train: bool, seed: int | None = None, normalize: bool = True
) -> A.Compose:
    """Fit to `image_size`, then the train or eval list from params, then normalise.

    With `normalize` false the result stays a uint8 (H, W, 3) array, for a DeviceLoader to
    normalise whole batches on the device.
    """
    size = params.image_size
    if params.keep_aspect:
        # Replicating the border keeps a uniform background uniform (silhouettes, studio shots).
        fit = [FitSquare(size)]
    else:
        fit = [A.Resize(height=size, width=size, interpolation=cv2.INTER_AREA)]
    specs = params.augment.train if train else params.augment.eval
    policy = [create_transform(spec, size) for spec in specs]
    tail = [A.Normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD), ToTensorV2()] if normalize else []
    return A.Compose(fit + policy + tail, seed=seed)
