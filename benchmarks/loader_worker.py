"""Images per second of ONE loader worker with a preset's training augmentation, on this CPU.

    python benchmarks/loader_worker.py                         # presets/classify-leaves-gpu.yaml
    python benchmarks/loader_worker.py --preset leaf-silhouettes --images 512

A DataLoader worker is one process running LeafDataset items one after another, so this times
exactly that, in this process with one thread (torch, OpenCV): items read from stage cache's
uint8 array (the pipeline's path, side by side with decoding the JPEGs), through the preset's
merged training transforms. It then says how many workers a GPU of --gpu-img-s needs. The last
line printed is JSON with the machine named.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from throughput_data import write_jpegs  # noqa: E402

from pipeline.config.params import parse_params  # noqa: E402
from pipeline.config.presets import load_preset, merged_params  # noqa: E402
from pipeline.data.images import ImageCache  # noqa: E402
from pipeline.data.loaders import LeafDataset  # noqa: E402
from pipeline.data.network_images import write_images  # noqa: E402
from pipeline.data.transforms import build_transforms  # noqa: E402


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="classify-leaves-gpu")
    parser.add_argument("--images", type=int, default=512, help="224 px JPEGs to generate")
    parser.add_argument("--repeats", type=int, default=3, help="best of this many passes")
    parser.add_argument("--gpu-img-s", type=float, default=3000.0, help="the rate to feed")
    return parser.parse_args(argv)


def items_per_second(dataset: LeafDataset, repeats: int) -> float:
    """The best of `repeats` passes over every item (epoch 1, so augmentation is drawn)."""
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        for index in range(len(dataset)):
            dataset[(index, 1)]
        best = min(best, time.perf_counter() - start)
    return len(dataset) / best


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    base = yaml.safe_load(Path("params.yaml").read_text(encoding="utf-8"))
    params = parse_params(merged_params(load_preset(args.preset), base))
    model = next(iter(params.train.models))
    hp = params.train.for_model(model)
    transform = build_transforms(hp, train=True, normalize=False)
    with tempfile.TemporaryDirectory() as folder:
        paths = write_jpegs(Path(folder), args.images, seed=0)
        index = write_images(
            pd.DataFrame({"path": paths, "md5": ""}), hp.image_size, Path(folder) / "images.npy"
        )
        cache = ImageCache(Path(folder) / "images.npy", index.assign(row=np.arange(len(index))))
        targets = [0] * len(paths)
        rates = {
            "cache": items_per_second(
                LeafDataset(paths, targets, transform, seed=0, cache=cache), args.repeats
            ),
            "jpeg": items_per_second(
                LeafDataset(paths, targets, transform, decode_side=hp.image_size, seed=0),
                args.repeats,
            ),
        }
    result = {
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} "
        f"thread, {__import__('os').cpu_count()} cores",
        "preset": args.preset,
        "model": model,
        "image_size": hp.image_size,
        "augment": [spec.name for spec in hp.augment.train],
        "worker_img_s_cache": round(rates["cache"], 1),
        "worker_img_s_jpeg": round(rates["jpeg"], 1),
        "gpu_img_s": args.gpu_img_s,
        "workers_needed_cache": math.ceil(args.gpu_img_s / rates["cache"]),
        "workers_needed_jpeg": math.ceil(args.gpu_img_s / rates["jpeg"]),
    }
    print(
        f"one worker: {rates['cache']:.0f} img/s from the cache, {rates['jpeg']:.0f} img/s "
        f"decoding JPEGs ({args.preset}, {hp.image_size} px); {args.gpu_img_s:.0f} img/s needs "
        f"{result['workers_needed_cache']} workers ({result['workers_needed_jpeg']} on JPEGs)"
    )
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
