"""throughput.py's images and its two data paths, and the images/s each delivers on the device.

The images are generated 224 px leaf JPEGs and stage cache's array of them. The naive path
decodes every JPEG with PIL every epoch and runs torchvision transforms in a default
DataLoader; ours reads the cached uint8 pixels through the pipeline's dataset and loaders.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torchvision.transforms as T
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from pipeline.config.model_settings import AugmentParams, ModelParams, TransformSpec
from pipeline.config.schema import GenerateParams, LoaderParams
from pipeline.data.images import ImageCache
from pipeline.data.loaders import DeviceLoader, LeafDataset, create_loader, loader_kwargs
from pipeline.data.network_images import write_images
from pipeline.data.synthetic import JPEG_OPTIONS, make_species, render_image
from pipeline.data.transforms import IMAGENET_MEAN, IMAGENET_STD, build_transforms
from pipeline.training.device import use_channels_last

CLASSES = 176  # Classify Leaves
SOURCE_SIZE = 224  # its JPEGs are 224 x 224
# The shipped params.yaml's training augmentation, and its torchvision equivalent.
AUGMENT = [
    {"name": "RandomResizedCrop", "scale": [0.75, 1.0], "ratio": [0.9, 1.1]},
    {"name": "HorizontalFlip", "p": 0.5},
    {"name": "VerticalFlip", "p": 0.5},
    {"name": "RandomRotate90", "p": 0.5},
    {"name": "RandomBrightnessContrast", "brightness_limit": 0.2, "contrast_limit": 0.2, "p": 0.5},
]


# --- The images -------------------------------------------------------------------------------


def _render(job: tuple[int, int, str]) -> None:
    index, seed, path = job
    species = make_species(GenerateParams(num_species=48))
    rng = np.random.default_rng([seed, index])
    picture = render_image(species[index % len(species)], SOURCE_SIZE, rng)
    picture.save(path, format="JPEG", **JPEG_OPTIONS)


def write_jpegs(folder: Path, count: int, seed: int) -> list[str]:
    """`count` 224 px leaf JPEGs in `folder`, rendered in parallel."""
    paths = [str(folder / f"{index}.jpg") for index in range(count)]
    with Pool(os.cpu_count()) as pool:
        pool.map(_render, [(index, seed, path) for index, path in enumerate(paths)], 16)
    return paths


def prepare_images(args, folder: Path) -> tuple[list[str], ImageCache, float]:
    """The JPEGs, and stage cache's array of them; returns the paths, cache and build seconds."""
    (folder / "images").mkdir()
    start = time.perf_counter()
    paths = write_jpegs(folder / "images", args.num_images, args.seed)
    print(f"{len(paths)} JPEGs of {SOURCE_SIZE} px written in {time.perf_counter() - start:.0f} s")
    start = time.perf_counter()
    index = write_images(
        pd.DataFrame({"path": paths, "md5": ""}), args.image_size, folder / "images.npy"
    )
    cache = ImageCache(folder / "images.npy", index.assign(row=np.arange(len(index))))
    seconds = time.perf_counter() - start
    print(f"cache built in {seconds:.1f} s (once; not in the per-epoch figures)")
    return paths, cache, seconds


# --- The two data paths -----------------------------------------------------------------------


class NaiveDataset(Dataset):
    """What a first notebook does: open, decode and transform every JPEG, every epoch."""

    def __init__(self, paths: list[str], targets: np.ndarray, transform: Callable):
        self.paths, self.targets, self.transform = paths, targets, transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        with Image.open(self.paths[index]) as image:
            return self.transform(image.convert("RGB")), int(self.targets[index])


def naive_transform(size: int, train: bool) -> T.Compose:
    tail = [T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    if not train:
        return T.Compose([T.Resize((size, size)), *tail])
    rotate90 = T.RandomApply([T.RandomRotation((90, 90))], p=0.5)
    jitter = T.RandomApply([T.ColorJitter(brightness=0.2, contrast=0.2)], p=0.5)
    policy = [T.RandomResizedCrop(size, scale=(0.75, 1.0), ratio=(0.9, 1.1))]
    policy += [T.RandomHorizontalFlip(), T.RandomVerticalFlip(), rotate90, jitter]
    return T.Compose([*policy, *tail])


def naive_loader(paths, targets, size: int, batch: int, train: bool) -> DataLoader:
    dataset = NaiveDataset(paths, targets, naive_transform(size, train))
    return DataLoader(dataset, batch_size=batch, shuffle=train, drop_last=train)


def our_loader(
    cache: ImageCache, paths, targets, args, train: bool, device: torch.device
) -> DeviceLoader:
    """As train.build_loaders makes them: cached uint8 pixels, normalised on the device."""
    augment = AugmentParams(train=[TransformSpec(**spec) for spec in AUGMENT])
    hp = ModelParams(image_size=args.image_size, augment=augment)
    transform = build_transforms(hp, train=train, normalize=False)
    dataset = LeafDataset(paths, targets, transform, seed=args.seed, cache=cache)
    settings = loader_kwargs(LoaderParams(num_workers=args.num_workers), device, args.num_workers)
    loader = create_loader(dataset, args.batch_size, train=train, seed=args.seed, **settings)
    return DeviceLoader(loader, device, use_channels_last("auto", device))


def create_loaders(paths, cache: ImageCache, args, device: torch.device) -> dict:
    """(naive or ours, train) -> loader, over the same images and random labels."""
    targets = np.random.default_rng(args.seed).integers(0, CLASSES, len(paths))
    loaders = {}
    for train in (True, False):
        loaders["naive", train] = naive_loader(
            paths, targets, args.image_size, args.batch_size, train
        )
        loaders["ours", train] = our_loader(cache, paths, targets, args, train, device)
    return loaders


def batches(loader: DataLoader, device: torch.device) -> Iterator[tuple[torch.Tensor, ...]]:
    """The loader's batches on `device`, epoch after epoch."""
    for epoch in range(1_000_000):
        if hasattr(loader.sampler, "set_epoch"):
            loader.sampler.set_epoch(epoch)
        for images, targets in loader:
            yield images.to(device, non_blocking=True), targets.to(device, non_blocking=True)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """One intra-op thread, for the data path alone, on both sides.

    A batch's arithmetic is too small to gain from more, and on a CPU shared with other jobs
    OpenMP threads that wait for a busy core spin: that made the data path 5x slower.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def time_loader(loader: DataLoader, device: torch.device, epochs: int) -> float:
    """Images per second delivered on `device`, over `epochs` epochs after a warm-up one."""
    stream = batches(loader, device)
    steps = len(loader)
    for _ in range(steps):
        next(stream)
    synchronize(device)
    start, seen = time.perf_counter(), 0
    for _ in range(epochs * steps):
        seen += len(next(stream)[0])
    synchronize(device)
    return seen / (time.perf_counter() - start)
