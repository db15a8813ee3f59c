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
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the project, for `pipeline`

from throughput_data import (  # noqa: E402
    create_loaders,
    one_thread,
    our_loader,
    prepare_images,
    time_loader,
)
from throughput_models import best_of, measure_models  # noqa: E402

from pipeline.data.images import ImageCache  # noqa: E402
from pipeline.training.device import use_channels_last  # noqa: E402


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
