"""Images per second of our data path and training, against a naive baseline, in one run.

    python benchmarks/throughput.py --model resnet18 --image-size 128
    python benchmarks/throughput.py --model resnet18 --image-size 128 --scaling

Writes --num-images 224 px JPEGs of Classify Leaves shape (pipeline.generate's leaves) to a
temporary folder, then measures:
(a) the data path alone: training batches delivered on the device, no model. Ours reads stage
    cache's memory-mapped array (built once first; its time is `cache_build_s`) through
    LeafDataset, albumentations and create_loader (workers, pinned memory and channels_last on
    CUDA). Naive decodes every JPEG with PIL every epoch and runs torchvision transforms in a
    default DataLoader (no workers).
(b) training and inference of --model fed by each path: ours with the pipeline's device
    settings (bf16 or fp16 autocast and channels_last on CUDA, cudnn.benchmark, optionally
    torch.compile), naive in fp32 without channels_last.
(c) the model's ceiling: the same steps on one synthetic batch already on the device.
Both sides apply the same augmentation (the shipped params.yaml's). With --scaling it also
times one epoch of our data path, and its peak RSS (each in a fresh process), at 1x, 2x and 4x
--scaling-rows images, against the same array loaded into memory.

Each figure is the best of --repeats rounds that alternate between the sides, so that other
jobs on a shared machine weigh on both alike. On CUDA ours pins memory and copies with
non_blocking. The last line printed is JSON: model, image_size, device, loader_ours_img_s,
loader_naive_img_s, loader_ratio, train_ours_img_s, train_naive_img_s, ratio (training, ours
over naive), infer_*, ceiling_img_s (training), ceiling_infer_img_s, and the settings.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from functools import partial
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torchvision.transforms as T
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.config.model_settings import AugmentParams, ModelParams, TransformSpec
from pipeline.config.schema import GenerateParams, LoaderParams
from pipeline.data.images import (
    ImageCache,
    write_images,  # noqa: E402
)
from pipeline.data.loaders import DeviceLoader, LeafDataset, create_loader, loader_kwargs
from pipeline.data.synthetic import JPEG_OPTIONS, make_species, render_image  # noqa: E402
from pipeline.data.transforms import IMAGENET_MEAN, IMAGENET_STD, build_transforms
from pipeline.models.registry import create_model  # noqa: E402
from pipeline.training.device import amp_context, compile_model, use_channels_last  # noqa: E402

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


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="resnet18", help="any name create_model accepts")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--num-images", type=int, default=2048, help="JPEGs to generate")
    parser.add_argument(
        "--num-workers", type=int, default=min(8, os.cpu_count() or 1), help="ours only"
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    parser.add_argument("--loader-epochs", type=int, default=2, help="timed, after one warm-up")
    parser.add_argument("--steps", type=int, default=20, help="timed model steps per variant")
    parser.add_argument("--warmup-steps", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds; best kept")
    parser.add_argument("--compile", action="store_true", help="torch.compile our model")
    parser.add_argument("--scaling", action="store_true", help="also the 1x/2x/4x table")
    parser.add_argument("--scaling-rows", type=int, default=18353, help="1x (Classify Leaves)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--scaling-child", nargs=3, metavar=("ARRAY", "ROWS", "MODE"), help=argparse.SUPPRESS
    )
    return parser.parse_args(argv)


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


# --- Models -----------------------------------------------------------------------------------


def time_steps(
    model: nn.Module,
    stream: Iterator[tuple[torch.Tensor, ...]],
    args: argparse.Namespace,
    device: torch.device,
    train: bool,
    ours: bool,
) -> float:
    """Images per second of training (SGD steps) or inference on the batches of `stream`.

    Ours runs with the pipeline's settings: autocast (bf16 or fp16 on CUDA) and cuDNN's
    fastest kernels (train.deterministic: false); naive in fp32 with PyTorch's defaults.
    """
    torch.backends.cudnn.benchmark = ours
    autocast, scaler = amp_context(device, ours)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    model.train(train)
    seen, start = 0, 0.0
    for step in range(args.warmup_steps + args.steps):
        if step == args.warmup_steps:
            synchronize(device)
            seen, start = 0, time.perf_counter()
        images, targets = next(stream)
        with torch.set_grad_enabled(train), autocast():
            logits = model(images)
            loss = loss_fn(logits, targets)
        if train:
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()  # a disabled scaler passes both through
            scaler.step(optimizer)
            scaler.update()
        seen += len(images)
    synchronize(device)
    return seen / (time.perf_counter() - start)


def fresh_model(args: argparse.Namespace, device: torch.device, ours: bool) -> nn.Module:
    """The same initial weights every time; ours in the pipeline's memory format (and compiled)."""
    torch.manual_seed(args.seed)
    model = create_model(args.model, CLASSES).to(device)
    if ours and use_channels_last("auto", device):
        model = model.to(memory_format=torch.channels_last)
    if ours and args.compile:
        compile_model(model, args.batch_size)
    return model


def synthetic(args, device: torch.device) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One batch already on the device, forever: the model's ceiling."""
    images = torch.randn(args.batch_size, 3, args.image_size, args.image_size, device=device)
    if use_channels_last("auto", device):
        images = images.contiguous(memory_format=torch.channels_last)
    targets = torch.randint(0, CLASSES, (args.batch_size,), device=device)
    while True:
        yield images, targets


def best_of(repeats: int, measures: dict[str, Callable[[], float]]) -> dict[str, float]:
    """Each measure's best images/s over `repeats` interleaved rounds.

    Other jobs on a shared machine only ever slow a round down, so the best round is the
    closest to what the code can do, and interleaving exposes both sides to the same load.
    """
    best = dict.fromkeys(measures, 0.0)
    for _ in range(repeats):
        for name, measure in measures.items():
            best[name] = max(best[name], measure())
            print(f"{name}: {best[name]:.1f} img/s (best so far)", flush=True)
    return best


def measure_models(loaders: dict, args, device: torch.device) -> dict[str, float]:
    """(b) and (c): training and inference images/s for each feed, and on a synthetic batch."""
    results = {}
    for train, kind in ((True, "train"), (False, "infer")):
        ceiling = "ceiling_img_s" if train else "ceiling_infer_img_s"
        feeds = {
            f"{kind}_naive_img_s": (False, batches(loaders["naive", train], device)),
            f"{kind}_ours_img_s": (True, batches(loaders["ours", train], device)),
            ceiling: (True, synthetic(args, device)),
        }
        measures = {
            key: partial(
                time_steps, fresh_model(args, device, ours), stream, args, device, train, ours
            )
            for key, (ours, stream) in feeds.items()
        }
        results.update(best_of(args.repeats, measures))
    return results


# --- Scaling ----------------------------------------------------------------------------------


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def scaling_child(array: str, rows: int, mode: str) -> None:
    """One epoch of our training data path over `rows` cached images (in a fresh process)."""
    index = pd.DataFrame({"row": np.arange(rows), "path": "", "md5": ""})
    size = np.load(array, mmap_mode="r").shape[1]
    cache = ImageCache(array, index.assign(height=size, width=size))
    if mode == "in_memory":  # what decoding once into RAM costs: the whole array resident
        cache._array = np.load(array)
    args = parse_args(["--image-size", str(size), "--num-workers", "0"])
    loader = our_loader(
        cache, [""] * rows, np.zeros(rows, dtype=int), args, True, torch.device("cpu")
    )
    start = time.perf_counter()
    with one_thread():
        for _ in loader:
            pass
    print(json.dumps({"epoch_s": time.perf_counter() - start, "peak_rss_mib": peak_rss_mib()}))


def tiled_array(source: Path, rows: int, path: Path) -> None:
    """A cache array of `rows` rows: `source`'s rows repeated.

    Copied as a file, never mapped: a child's getrusage peak starts at its parent's peak (Linux
    carries it across fork and exec), so the parent must stay small.
    """
    base = np.load(source, mmap_mode="r")
    header = {"descr": base.dtype.str, "fortran_order": False, "shape": (rows, *base.shape[1:])}
    with open(source, "rb") as src, open(path, "wb") as out:
        np.lib.format.write_array_header_1_0(out, header)
        for start in range(0, rows, len(base)):
            src.seek(base.offset)
            left = min(rows - start, len(base)) * base.strides[0]
            while left:
                chunk = src.read(min(left, 1 << 24))
                out.write(chunk)
                left -= len(chunk)


def measure_scaling(source: Path, args, folder: Path) -> list[dict]:
    """Epoch time and peak RSS at 1x, 2x and 4x --scaling-rows, memory-mapped and in memory."""
    table = []
    for factor in (1, 2, 4):
        rows = factor * args.scaling_rows
        path = folder / f"scaled{factor}.npy"
        tiled_array(source, rows, path)
        for mode in ("memmap", "in_memory"):
            command = [sys.executable, __file__, "--scaling-child", str(path), str(rows), mode]
            output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
            row = {
                "factor": factor,
                "images": rows,
                "mode": mode,
                **json.loads(output.splitlines()[-1]),
            }
            print(
                f"scaling {factor}x ({rows} images, {mode}): epoch {row['epoch_s']:.1f} s, "
                f"peak RSS {row['peak_rss_mib']:.0f} MiB",
                flush=True,
            )
            table.append(row)
        path.unlink()
    return table


# --- Main -------------------------------------------------------------------------------------


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def describe(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} CPU, {os.cpu_count()} cores"


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


def measure_loaders(loaders: dict, args, device: torch.device) -> dict[str, float]:
    """(a): training batches per second on the device, no model (see one_thread)."""
    measures = {
        f"loader_{name}_img_s": partial(
            time_loader, loaders[name, True], device, args.loader_epochs
        )
        for name in ("naive", "ours")
    }
    with one_thread():
        return best_of(args.repeats, measures)


def summarize(results: dict, args, device: torch.device, cache_build_s: float) -> dict:
    """The JSON line: figures rounded, ratios, and the settings they were measured with."""
    figures = {key: round(value, 2) for key, value in results.items()}
    return {
        "model": args.model,
        "image_size": args.image_size,
        "device": describe(device),
        **figures,
        "loader_ratio": round(results["loader_ours_img_s"] / results["loader_naive_img_s"], 2),
        "ratio": round(results["train_ours_img_s"] / results["train_naive_img_s"], 3),
        "infer_ratio": round(results["infer_ours_img_s"] / results["infer_naive_img_s"], 3),
        "cache_build_s": round(cache_build_s, 2),
        "batch_size": args.batch_size,
        "num_images": args.num_images,
        "num_workers": args.num_workers,
        "repeats": args.repeats,
        "amp": "bf16/fp16 autocast" if device.type == "cuda" else "fp32 (CPU)",
        "channels_last": use_channels_last("auto", device),
        "compile": args.compile,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
    }


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.scaling_child:
        array, rows, mode = args.scaling_child
        scaling_child(array, int(rows), mode)
        return {}
    device = resolve_device(args.device)
    with tempfile.TemporaryDirectory(prefix="leaf-throughput-") as folder:
        folder = Path(folder)
        paths, cache, cache_build_s = prepare_images(args, folder)
        # Scaling first, while this process is still small (see tiled_array).
        scaling = measure_scaling(folder / "images.npy", args, folder) if args.scaling else None
        loaders = create_loaders(paths, cache, args, device)
        results = measure_loaders(loaders, args, device) | measure_models(loaders, args, device)
    summary = summarize(results, args, device, cache_build_s)
    if scaling:
        summary["scaling"] = scaling
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
