"""Images, augmentation and loaders shared by the train stage (and checked by prepare).

Image modes: every image is converted to 8-bit RGB as it is read. Grayscale, palette and CMYK
images are converted; 16-bit images are scaled to 8 bits; images with transparency are
composited onto white; EXIF orientation is applied. Nothing is rejected for its mode.
"""

from __future__ import annotations

import codecs
import inspect
import random
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import albumentations as A
import cv2
import numpy as np
import pydantic
import torch
from albumentations.pytorch import ToTensorV2
from PIL import Image, ImageOps
from torch.utils.data import DataLoader, Dataset, Sampler

from pipeline.cli import PipelineError

if TYPE_CHECKING:
    import pandas as pd

    from pipeline.config import ModelParams, TransformSpec

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Bigger than any real photo a competition ships, small enough to refuse decompression bombs.
# Checked on the header before decoding; PIL's own check only warns below twice its limit, and
# turning that warning into an error is not thread-safe (prepare decodes in threads).
MAX_PIXELS = 40_000_000
Image.MAX_IMAGE_PIXELS = None


class ImageReadError(PipelineError):
    """An image file is missing, truncated or not an image."""


def load_image(path: Path | str, min_side: int | None = None) -> np.ndarray:
    """Read an image as an RGB uint8 array (H, W, 3), whatever its mode.

    Args:
        path: the image file.
        min_side: if given, JPEGs are decoded at the smallest DCT scale that keeps both sides at
            least this long (much faster for large photos); the pixels are not resized further.
    """
    try:
        with Image.open(path) as img:
            width, height = img.size
            if width * height > MAX_PIXELS:
                raise ImageReadError(
                    f"{path}: {width}x{height} pixels is over the {MAX_PIXELS:,} "
                    "pixel limit (a decompression bomb?)"
                )
            if min_side and img.format == "JPEG":
                img.draft("RGB", (min_side, min_side))
            img.load()
            return np.asarray(to_rgb(img))
    except FileNotFoundError:
        raise ImageReadError(f"{path}: image file not found") from None
    except (OSError, SyntaxError, ValueError) as err:
        raise ImageReadError(f"{path}: cannot read image ({err})") from None


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any PIL mode to RGB (see the module docstring for the rules)."""
    img = ImageOps.exif_transpose(img)
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit grayscale: scale the full range to 8 bits instead of clipping.
        array = np.asarray(img, dtype=np.float64)
        top = array.max() or 1.0
        img = Image.fromarray(np.round(array * (255.0 / top)).astype(np.uint8))
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA"):
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img.convert("RGBA"))
    return img.convert("RGB") if img.mode != "RGB" else img


def create_transform(spec: TransformSpec, image_size: int) -> A.BasicTransform:
    """Build one albumentations transform from a params entry.

    Transforms that take an output size (`size`, or `height`/`width`) get `image_size`
    unless the entry sets it, so `{name: RandomResizedCrop, scale: [0.6, 1.0]}` is enough.
    """
    cls = getattr(A, spec.name, None)
    if not (inspect.isclass(cls) and issubclass(cls, A.BasicTransform)):
        raise ValueError(
            f"{spec.name!r} is not an albumentations transform (see albumentations.ai)"
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


def build_transforms(params: ModelParams, train: bool, seed: int | None = None) -> A.Compose:
    """Fit to `image_size`, then the train or eval list from params, then normalise."""
    size = params.image_size
    if params.keep_aspect:
        # Replicating the border keeps a uniform background uniform (silhouettes, studio shots).
        fit = [
            A.LongestMaxSize(max_size=size, interpolation=cv2.INTER_AREA),
            A.PadIfNeeded(min_height=size, min_width=size, border_mode=cv2.BORDER_REPLICATE),
        ]
    else:
        fit = [A.Resize(height=size, width=size, interpolation=cv2.INTER_AREA)]
    specs = params.augment.train if train else params.augment.eval
    policy = [create_transform(spec, size) for spec in specs]
    tail = [A.Normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD), ToTensorV2()]
    return A.Compose(fit + policy + tail, seed=seed)


class LeafDataset(Dataset):
    """Images by path with integer targets (-1 where unknown, as for the test set).

    Items are `dataset[index]` or `dataset[(index, epoch)]` (as EpochSampler yields them); the
    augmentation of an item is a function of (seed, epoch, index) only, and plain indices count
    as epoch 0.
    """

    def __init__(
        self,
        paths: Sequence[str],
        targets: Sequence[int] | None,
        transform: A.Compose,
        decode_side: int | None = None,
        seed: int = 0,
    ):
        self.paths = list(paths)
        self.targets = list(targets) if targets is not None else [-1] * len(self.paths)
        self.transform = transform
        self.decode_side = decode_side
        self.seed = seed

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, item: int | tuple[int, int]) -> tuple[torch.Tensor, int]:
        index, epoch = item if isinstance(item, tuple) else (item, 0)
        image = load_image(self.paths[index], min_side=self.decode_side)
        # Reseeding per item makes its augmentation independent of which worker draws it and of
        # what was drawn before, so the worker count and resuming cannot change the stream. All
        # transforms share one generator: Compose.set_random_seed would give each the same seed,
        # and then HorizontalFlip and VerticalFlip (both p=0.5) always fire together.
        rng = np.random.default_rng([self.seed % 2**64, epoch, index])
        self.transform.set_random_state(rng, random.Random(int(rng.integers(2**63))))
        return self.transform(image=image)["image"], self.targets[index]


class EpochSampler(Sampler[tuple[int, int]]):
    """A fresh order every epoch, as a pure function of (seed, epoch), yielding (index, epoch).

    Like DistributedSampler, call `set_epoch()` before iterating: the order no longer depends
    on how many epochs the process has run, so a resumed run sees what an uninterrupted one saw.
    """

    def __init__(self, size: int, seed: int):
        self.size = size
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[tuple[int, int]]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(self.size, generator=generator).tolist()
        return iter([(index, self.epoch) for index in order])


def create_loader(
    dataset: LeafDataset,
    batch_size: int,
    *,
    train: bool,
    num_workers: int,
    seed: int,
    pin_memory: bool = False,
) -> DataLoader:
    """A DataLoader whose batches depend only on the seed and the epoch, not on the workers.

    Training loaders shuffle through an EpochSampler (call `loader.sampler.set_epoch(epoch)`
    before each epoch) and drop the last partial batch; other loaders keep the dataset's order.
    """
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=EpochSampler(len(dataset), seed) if train else None,
        drop_last=train and len(dataset) > batch_size,
        num_workers=num_workers,
        pin_memory=pin_memory,
        persistent_workers=num_workers > 0,
        # Each new iterator draws a base seed from this generator; without one it would draw
        # from the global torch RNG (which dropout uses) and a resume would shift that stream.
        generator=torch.Generator().manual_seed(seed),
    )


def load_table(path: Path | str) -> pd.DataFrame:
    """Read a table the pipeline wrote (prepared, folds) with its text columns kept as text."""
    import pandas as pd

    text = {"image": str, "label": str, "path": str, "md5": str}
    return pd.read_csv(path, dtype=text, keep_default_na=False)


def not_utf8_message(path: Path) -> str:
    """Where a CSV stops being UTF-8, as a message (pandas counts offsets in its read buffer)."""
    data = path.read_bytes().removeprefix(codecs.BOM_UTF8)
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        return (
            f"{path}: not UTF-8 text (line {line}: byte {data[err.start]:#04x}); save it as UTF-8"
        )
    return f"{path}: not UTF-8 text; save it as UTF-8"


def apply_view(batch: torch.Tensor, view: str) -> torch.Tensor:
    """One test-time augmentation view of an (N, C, H, W) batch of square images."""
    if view == "identity":
        return batch
    if view == "hflip":
        return batch.flip(3)
    if view == "vflip":
        return batch.flip(2)
    if view == "transpose":
        return batch.transpose(2, 3)
    if view in ("rot90", "rot180", "rot270"):
        return torch.rot90(batch, k=int(view[3:]) // 90, dims=(2, 3))
    raise ValueError(f"unknown TTA view {view!r}")
