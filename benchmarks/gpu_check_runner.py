"""Stage train, run as `python -m pipeline.stages.train ARGS` runs it, with gpu_check's instruments.

    python benchmarks/gpu_check_runner.py [--gpu-memory-gib G] [--time-train] -- --model M --fold 0

The project's code stays untouched; the instruments are laid on from outside:
--gpu-memory-gib  caps this process's CUDA caching allocator at G GiB, as a fraction of whatever
                  card it runs on, so that an out-of-memory comes as fast on a 141 GiB card as on
                  a 16 GiB one (skipped without CUDA).
--time-train      prints `TRAIN_SECONDS_PREFIX <seconds>` after each training pass (the n-th line
                  is epoch n), timed between two device synchronisations: the training part of an
                  epoch without its validation. It wraps
                  pipeline.training.engine.train_one_epoch; if the
                  engine stops calling that, nothing is printed and gpu_check falls back to the
                  stage's whole-epoch seconds.
"""

from __future__ import annotations

import argparse
import functools
import runpy
import sys
import time

TRAIN_SECONDS_PREFIX = "gpu_check train seconds:"


def memory_fraction(gib: float, total_bytes: int) -> float:
    """The share of a card of `total_bytes` that is `gib` GiB (all of it on a smaller card)."""
    return min(1.0, gib * 2**30 / total_bytes)


def cap_gpu_memory(gib: float) -> None:
    import torch

    if not torch.cuda.is_available():
        return
    total = torch.cuda.get_device_properties(0).total_memory
    torch.cuda.set_per_process_memory_fraction(memory_fraction(gib, total))


def synchronize_cuda() -> None:
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def time_training_passes() -> None:
    from pipeline.training import engine

    train_one_epoch = engine.train_one_epoch

    @functools.wraps(train_one_epoch)
    def timed(*args, **kwargs):
        synchronize_cuda()
        start = time.perf_counter()
        result = train_one_epoch(*args, **kwargs)
        synchronize_cuda()
        print(f"{TRAIN_SECONDS_PREFIX} {time.perf_counter() - start:.4f}", flush=True)
        return result

    engine.train_one_epoch = timed  # engine.run_epoch looks the name up at each call


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gpu-memory-gib", type=float, help="cap CUDA memory at this many GiB")
    parser.add_argument("--time-train", action="store_true", help="print each training pass's s")
    parser.add_argument("stage_args", nargs=argparse.REMAINDER, help="-- then stage train's")
    args = parser.parse_args(argv)
    args.stage_args = args.stage_args[1:] if args.stage_args[:1] == ["--"] else args.stage_args
    return args


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    if args.gpu_memory_gib is not None:
        cap_gpu_memory(args.gpu_memory_gib)
    if args.time_train:
        time_training_passes()
    sys.argv = ["pipeline.stages.train", *args.stage_args]
    runpy.run_module("pipeline.stages.train", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main(sys.argv[1:])
