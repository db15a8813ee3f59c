"""Images, augmentation and loaders shared by the train stage (and checked by prepare).

Image modes: every image is converted to 8-bit RGB as it is read. Grayscale, palette and CMYK
images are converted; 16-bit images are scaled to 8 bits; images with transparency are
composited onto white; EXIF orientation is applied. Nothing is rejected for its mode.
"""

from __future__ import annotations

import codecs
import inspect
import json
import math
import mmap
import random
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import albumentations as A
import cv2
import numpy as np
import pydantic
import torch
import torch.nn.functional as F
from albumentations.pytorch import ToTensorV2
from PIL import Image, ImageOps
from torch.utils.data import DataLoader, Dataset, Sampler

from pipeline.cli import PipelineError
from pipeline.files import CACHE_DIR, CACHE_IMAGES, CACHE_INDEX, CACHE_MANIFEST

if TYPE_CHECKING:
    import pandas as pd

    from pipeline.config import LoaderParams, ModelParams, TransformSpec

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


def fit_long_side(image: np.ndarray, size: int) -> np.ndarray:
    """Scale an (H, W, 3) image, aspect kept, so that its long side is `size`.

    Stage cache stores images fitted by this, and FitSquare fits by it, so the two cannot
    drift apart. The sides are rounded as A.LongestMaxSize(interpolation=INTER_AREA) rounds
    them, and an image already that size is returned as it is: the pixels are bit-identical.
    """
    height, width = image.shape[:2]
    scale = size / max(height, width)
    fitted = max(1, round(height * scale)), max(1, round(width * scale))
    if fitted == (height, width):
        return image
    return cv2.resize(image, fitted[::-1], interpolation=cv2.INTER_AREA)


def pad_to_square(image: np.ndarray, size: int) -> np.ndarray:
    """Centre an image no larger than `size` on a `size` x `size` square, its border replicated.

    An odd padding puts the extra row below and the extra column on the right, as
    A.PadIfNeeded(position="center") does.
    """
    height, width = image.shape[:2]
    if (height, width) == (size, size):
        return image
    top, left = (size - height) // 2, (size - width) // 2
    bottom, right = size - height - top, size - width - left
    return cv2.copyMakeBorder(image, top, bottom, left, right, cv2.BORDER_REPLICATE)


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


# Pages read through a mapping count towards the process's resident memory (what getrusage and
# the OOM killer see) until they are unmapped, so an epoch would grow every worker's RSS to the
# whole array; unmapped pages stay in the OS page cache, shared by all. A page fault may map
# every cached page around it within its page table, which spans 2 MiB on x86-64 and arm64.
FAULT_WINDOW_BYTES = 2 * 2**20


class ImageCache:
    """Images that stage `cache` decoded once, read from its memory-mapped uint8 array.

    The array is (N, S, S, 3): image i fills the top-left (height, width) corner of row i, its
    long side S. `cache[k]` is the k-th image this cache holds, cropped to its own size; `select`
    gives the images of a table's rows. Each process maps the array on first use, so DataLoader
    workers map it themselves instead of receiving a pickled copy.
    """

    def __init__(self, path: Path | str, index: pd.DataFrame):
        """
        Args:
            path: the .npy array.
            index: the images held, in order: the array `row`, `path`, `md5`, `height`, `width`.
        """
        self.path = Path(path)
        self.index = index.reset_index(drop=True)
        self.rows = self.index["row"].to_numpy()
        self.shapes = self.index[["height", "width"]].to_numpy()
        self._array: np.memmap | None = None

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, item: int) -> np.ndarray:
        if self._array is None:
            self._array = np.load(self.path, mmap_mode="r")
        height, width = self.shapes[item]
        image = np.array(self._array[self.rows[item], :height, :width])  # a copy: see below
        self._drop_pages(self.rows[item])
        return image

    def _drop_pages(self, row: int) -> None:
        """Unmap what reading `row` mapped (see FAULT_WINDOW_BYTES); a later read maps it again."""
        mapping = getattr(self._array, "_mmap", None)  # numpy's own mmap object
        if mapping is None or not hasattr(mmap, "MADV_DONTNEED"):
            return
        # numpy maps the file from the allocation-granularity boundary below the array's offset.
        start = self._array.offset % mmap.ALLOCATIONGRANULARITY + row * self._array.strides[0]
        first = max(0, start - FAULT_WINDOW_BYTES)
        first -= first % mmap.PAGESIZE
        end = min(len(mapping), start + self._array.strides[0] + FAULT_WINDOW_BYTES)
        mapping.madvise(mmap.MADV_DONTNEED, first, end - first)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_array": None}

    def select(self, table: pd.DataFrame) -> ImageCache:
        """The cached images of `table`'s rows (in its order), matched by `path` and `md5`.

        Raises:
            PipelineError: an image is not in the cache, or has changed since it was cached.
        """
        position = {
            key: i for i, key in enumerate(zip(self.index.path, self.index.md5, strict=True))
        }
        keys = list(zip(table["path"], table["md5"], strict=True))
        missing = [path for path, md5 in keys if (path, md5) not in position]
        if missing:
            raise PipelineError(
                f"{len(missing)} image(s) are not in {CACHE_DIR} or changed since it was built "
                f"(first: {missing[0]}); rebuild it: dvc repro cache"
            )
        return ImageCache(self.path, self.index.iloc[[position[key] for key in keys]])


def load_image_cache(size: int | None) -> ImageCache | None:
    """Stage `cache`'s images, checked to be fitted to `size`; None when `size` is None (off).

    Raises:
        PipelineError: the cache was not built, or was built with other settings.
    """
    if size is None:
        return None
    if not CACHE_MANIFEST.is_file():
        raise PipelineError(
            f"{CACHE_MANIFEST} not found: build the cache (dvc repro cache, or python -m "
            "pipeline.cache) or set cache.enabled: false"
        )
    manifest = json.loads(CACHE_MANIFEST.read_text(encoding="utf-8"))
    built = manifest["image_size"] if manifest["enabled"] else None
    if built != size:
        held = f"{built} px images" if built else "no images (cache.enabled was false)"
        raise PipelineError(
            f"{CACHE_DIR} holds {held} but the params ask for {size} px; rebuild it: "
            "dvc repro cache"
        )
    index = load_table(CACHE_INDEX)
    return ImageCache(CACHE_IMAGES, index.assign(row=np.arange(len(index))))


class LeafDataset(Dataset):
    """Images by path with integer targets (-1 where unknown, as for the test set).

    Items are `dataset[index]` or `dataset[(index, epoch)]` (as EpochSampler yields them); the
    augmentation of an item is a function of (seed, epoch, index) only, and plain indices count
    as epoch 0. With a `cache` (holding the same images in the same order) the pixels come from
    it and no file is decoded.
    """

    def __init__(
        self,
        paths: Sequence[str],
        targets: Sequence[int] | None,
        transform: A.Compose,
        decode_side: int | None = None,
        seed: int = 0,
        cache: ImageCache | None = None,
    ):
        self.paths = list(paths)
        self.targets = list(targets) if targets is not None else [-1] * len(self.paths)
        self.transform = transform
        self.decode_side = decode_side
        self.seed = seed
        if cache is not None and len(cache) != len(self.paths):
            raise ValueError(f"the cache holds {len(cache)} images for {len(self.paths)} paths")
        self.cache = cache

    def __len__(self) -> int:
        return len(self.paths)

    def read(self, index: int) -> np.ndarray:
        """The RGB pixels of item `index`: from the cache if there is one, else its file."""
        if self.cache is not None:
            return self.cache[index]
        return load_image(self.paths[index], min_side=self.decode_side)

    def __getitem__(self, item: int | tuple[int, int]) -> tuple[torch.Tensor, int]:
        index, epoch = item if isinstance(item, tuple) else (item, 0)
        image = self.read(index)
        # Reseeding per item makes its augmentation independent of which worker draws it and of
        # what was drawn before, so the worker count and resuming cannot change the stream. All
        # transforms share one generator: Compose.set_random_seed would give each the same seed,
        # and then HorizontalFlip and VerticalFlip (both p=0.5) always fire together.
        rng = np.random.default_rng([self.seed % 2**64, epoch, index])
        self.transform.set_random_state(rng, random.Random(int(rng.integers(2**63))))
        image = self.transform(image=image)["image"]
        if isinstance(image, np.ndarray):  # not normalised: uint8 (H, W, 3), see DeviceLoader
            image = torch.from_numpy(np.require(image, requirements="CW"))  # may be PIL's
        return image, self.targets[index]


class EpochSampler(Sampler[tuple[int, int]]):
    """A fresh order every epoch, as a pure function of (seed, epoch), yielding (index, epoch).

    Like DistributedSampler, call `set_epoch()` before iterating: the order no longer depends
    on how many epochs the process has run, so a resumed run sees what an uninterrupted one saw.

    Shared among `world_size` processes (under torchrun), the epoch's order is cut into whole
    global batches of `batch_size` and process `rank` yields its contiguous slice of each, so
    the processes' batches together are the ones a single process would train on.
    """

    def __init__(
        self, size: int, seed: int, *, batch_size: int = 1, rank: int = 0, world_size: int = 1
    ):
        if batch_size % world_size:
            raise ValueError(f"batch_size {batch_size} does not split among {world_size} ranks")
        self.size = size
        self.seed = seed
        self.epoch = 0
        self.batch_size, self.rank, self.world_size = batch_size, rank, world_size

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        if self.world_size == 1:
            return self.size
        return self.size // self.batch_size * (self.batch_size // self.world_size)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(self.size, generator=generator).tolist()
        if self.world_size > 1:
            order = self.share(order)
        return iter([(index, self.epoch) for index in order])

    def share(self, order: list[int]) -> list[int]:
        """This rank's slice of each whole global batch of `order` (a partial one is dropped)."""
        local = self.batch_size // self.world_size
        starts = range(0, len(order) - self.batch_size + 1, self.batch_size)
        offset = self.rank * local
        return [
            index for start in starts for index in order[start + offset : start + offset + local]
        ]


def shard_range(size: int, rank: int, world_size: int) -> range:
    """Process `rank`'s contiguous share of `size` items; shard lengths differ by one at most."""
    return range(size * rank // world_size, size * (rank + 1) // world_size)


def loader_kwargs(params: LoaderParams, device: torch.device) -> dict[str, Any]:
    """`create_loader`'s settings from `train.loader`, for batches that go to `device`."""
    return {
        "num_workers": params.num_workers,
        "pin_memory": params.pin_memory and device.type == "cuda",
        "persistent_workers": params.persistent_workers,
        "prefetch_factor": params.prefetch_factor,
    }


def create_loader(
    dataset: LeafDataset,
    batch_size: int,
    *,
    train: bool,
    seed: int,
    num_workers: int = 0,
    pin_memory: bool = False,
    persistent_workers: bool = True,
    prefetch_factor: int = 2,
    rank: int = 0,
    world_size: int = 1,
) -> DataLoader:
    """A DataLoader whose batches depend only on the seed and the epoch, not on the workers.

    Training loaders shuffle through an EpochSampler (call `loader.sampler.set_epoch(epoch)`
    before each epoch) and drop the last partial batch, so every training batch has one shape
    (torch.compile then never recompiles); other loaders keep the dataset's order.
    `persistent_workers` and `prefetch_factor` apply only with workers.

    Under torchrun, process `rank` of `world_size` gets its share of every global batch of
    `batch_size` (see EpochSampler) or, for other loaders, its contiguous shard of the dataset
    (see shard_range), in batches of `batch_size // world_size`.
    """
    workers = num_workers > 0
    if workers:
        # Workers then hand batches over by shared-memory file name instead of passing a file
        # descriptor through a Unix socket per batch: 13% more batches/s with 2 workers on a
        # 2-core CPU (BENCHMARKS.md). torch's shm manager deletes what a killed run leaves.
        torch.multiprocessing.set_sharing_strategy("file_system")
    if train:
        shares = {"batch_size": batch_size, "rank": rank, "world_size": world_size}
        sampler = EpochSampler(len(dataset), seed, **shares)
    else:
        sampler = shard_range(len(dataset), rank, world_size) if world_size > 1 else None
    return DataLoader(
        dataset,
        batch_size=batch_size // world_size,
        sampler=sampler,
        drop_last=train and len(dataset) > batch_size,
        num_workers=num_workers,
        pin_memory=pin_memory,
        persistent_workers=persistent_workers and workers,
        prefetch_factor=prefetch_factor if workers else None,
        # Each new iterator draws a base seed from this generator; without one it would draw
        # from the global torch RNG (which dropout uses) and a resume would shift that stream.
        generator=torch.Generator().manual_seed(seed),
    )


class DeviceLoader:
    """A loader of uint8 (N, H, W, 3) image batches that yields them ready for the model.

    Each batch goes to `device` as uint8, a quarter of the bytes of float32: copying batches
    between processes is what limits DataLoader workers, and pinned uint8 batches copy to a GPU
    four times faster. There it becomes (N, 3, H, W) float, normalised with the ImageNet
    statistics (as `build_transforms` would), in the model's memory format. Attributes such as
    `sampler`, `dataset` and `batch_size` are the wrapped DataLoader's.
    """

    def __init__(self, loader: DataLoader, device: torch.device, channels_last: bool = False):
        self.loader, self.device = loader, torch.device(device)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        # (x / 255 - mean) / std, as x * scale + shift.
        std = torch.tensor(IMAGENET_STD, device=self.device).view(3, 1, 1)
        self.scale = 1 / (255 * std)
        self.shift = -torch.tensor(IMAGENET_MEAN, device=self.device).view(3, 1, 1) / std

    def __len__(self) -> int:
        return len(self.loader)

    def __getattr__(self, name: str) -> Any:
        if name == "loader":  # not set yet: avoid recursing
            raise AttributeError(name)
        return getattr(self.loader, name)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for images, targets in self.loader:
            yield self.ready(images), targets.to(self.device, non_blocking=True)

    def ready(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (N, H, W, 3) -> normalised float (N, 3, H, W) on the device."""
        images = images.to(self.device, non_blocking=True)
        # Planar before normalising: broadcasting over a last dimension of 3 is slow on CPUs. One
        # pass converts to float and transposes, instead of copying the uint8 planes first.
        planar = images.permute(0, 3, 1, 2).to(torch.float32, memory_format=torch.contiguous_format)
        images = planar.mul_(self.scale).add_(self.shift)
        return images.contiguous(memory_format=self.memory_format)


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


GEOMETRIC_VIEWS = ("identity", "hflip", "vflip", "rot90", "rot180", "rot270", "transpose")
SCALE_VIEW = re.compile(r"scale(\d+(?:\.\d+)?)")
SCALE_LIMITS = (0.5, 2.0)
ALLOWED_VIEWS = ", ".join(GEOMETRIC_VIEWS) + (
    f", scale<f> with {SCALE_LIMITS[0]} <= f <= {SCALE_LIMITS[1]} "
    "(scale0.9 zooms in, scale1.1 zooms out)"
)


def view_scale(view: str) -> float | None:
    """The zoom factor of a `scale<f>` view, or None for a geometric view.

    Raises:
        ValueError: `view` is neither, naming the allowed views.
    """
    if view in GEOMETRIC_VIEWS:
        return None
    match = SCALE_VIEW.fullmatch(view)
    if match and SCALE_LIMITS[0] <= float(match[1]) <= SCALE_LIMITS[1]:
        return float(match[1])
    raise ValueError(f"unknown TTA view {view!r}; allowed: {ALLOWED_VIEWS}")


def zoom(batch: torch.Tensor, factor: float) -> torch.Tensor:
    """Zoom an (N, C, H, W) batch about its centre, keeping its shape.

    Args:
        batch: images, normalised or not.
        factor: below 1 zooms in (the centre `factor` of each side, enlarged back); above 1
            zooms out (shrunk by `factor`, then padded by repeating the border pixels, the
            way `keep_aspect` pads, so the background stays the background).
    """
    height, width = batch.shape[-2:]
    if factor < 1:
        h, w = max(1, round(height * factor)), max(1, round(width * factor))
        top, left = (height - h) // 2, (width - w) // 2
        crop = batch[..., top : top + h, left : left + w]
        return F.interpolate(crop, size=(height, width), mode="bilinear", align_corners=False)
    if factor > 1:
        h, w = max(1, round(height / factor)), max(1, round(width / factor))
        small = F.interpolate(batch, size=(h, w), mode="bilinear", antialias=True)
        top, left = (height - h) // 2, (width - w) // 2
        padding = (left, width - w - left, top, height - h - top)
        return F.pad(small, padding, mode="replicate")
    return batch


def apply_view(batch: torch.Tensor, view: str) -> torch.Tensor:
    """One test-time augmentation view of an (N, C, H, W) batch.

    Flips, rotations and `transpose` need square images (as `image_size` makes them);
    `scale<f>` views zoom about the centre (see `zoom`).
    """
    factor = view_scale(view)
    if factor is not None:
        return zoom(batch, factor)
    if view == "identity":
        return batch
    if view == "hflip":
        return batch.flip(3)
    if view == "vflip":
        return batch.flip(2)
    if view == "transpose":
        return batch.transpose(2, 3)
    return torch.rot90(batch, k=int(view[3:]) // 90, dims=(2, 3))


def average_views(logits: torch.Tensor, space: str) -> torch.Tensor:
    """Mean of (views, N, classes) logits over the views, as stage `ensemble` averages models.

    Args:
        logits: one model's logits for every view, stacked.
        space: `logits` averages raw logits; `probs` averages softmax probabilities and
            returns their log (a log-sum-exp, so probabilities that underflow stay finite).
    """
    if space == "probs":
        return torch.logsumexp(logits.float().log_softmax(-1), dim=0) - math.log(len(logits))
    return logits.mean(0)
