"""Every GPU measurement of the pipeline in one command: pass/fail and figures per check.

    python3 benchmarks/gpu_check.py                      # on one H100/H200: at most 8 minutes
    python3 benchmarks/gpu_check.py --smoke --out /tmp/gpu_check.json   # CPU, tiny, < 60 s

Checks (see BENCHMARKS.md "GPU device check"):
  a. amp_bf16, amp_fp16_scaler, amp_agreement, layout_compile, deterministic (in-process, the
     real engine and device helpers); oom and torchrun (stage train in a subprocess).
  b. speed: train images/s of ResNet-50, ResNet-18 and EfficientNet-B0 through the real cache,
     loaders and engine, against throughput.py's naive baseline and the synthetic ceiling,
     and TTA inference images/s.
  c. epoch: a Classify-Leaves-sized fold through stage train, projected to 5 folds x 30 epochs.
One check that raises is recorded as `fail` with its error and the others still run. Each has
a time budget; checks that measure several variants stop starting new ones when it runs out.
Prints a table and writes JSON (the machine, then every check) to --out.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the project, for `pipeline`
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # before cuBLAS starts (determinism)

import gpu_check_amp as amp  # noqa: E402
import gpu_check_project as project  # noqa: E402
import gpu_check_speed as speed  # noqa: E402
import timm  # noqa: E402
import torch  # noqa: E402

from pipeline.files import write_json  # noqa: E402

DEFAULT_OUT = Path(__file__).resolve().parent / "gpu_check.json"


@dataclass(frozen=True)
class Sizes:
    """Everything that differs between the GPU run and the CPU smoke run."""

    amp_model: str = "resnet18"
    amp_size: int = 64
    amp_batch: int = 64
    amp_images: int = 2048
    amp_steps: int = 300
    det_steps: int = 20
    workers: int = 12
    speed_size: int = 224
    speed_images: int = 3072
    naive_steps: int = 6
    speed_reserve_s: float = 25  # do not start a variant with less left
    # Eager first, so that a slow compile cannot crowd out a model.
    speed_variants: tuple = (
        ("resnet50", 128, False),
        ("resnet50", 256, False),
        ("resnet18", 256, False),
        ("efficientnet_b0", 256, False),
        ("resnet50", 256, True),
        ("resnet50", 128, True),
        ("resnet18", 256, True),
        ("efficientnet_b0", 256, True),
    )
    stage_model: str = "resnet18"
    small_images: int = 64
    small_size: int = 64
    small_batch: int = 16
    epoch_model: str = "resnet50"
    epoch_images: int = 18353  # Classify Leaves' train.csv
    epoch_classes: int = 176
    epoch_size: int = 224
    epoch_batch: int = 128
    epoch_epochs: int = 2


SMOKE = Sizes(
    amp_model="test_resnet",
    amp_size=32,
    amp_batch=8,
    amp_images=64,
    amp_steps=12,
    det_steps=2,
    workers=0,
    speed_size=32,
    speed_images=16,
    naive_steps=1,
    speed_reserve_s=0,
    speed_variants=(("test_resnet", 8, False),),
    stage_model="test_resnet",
    small_images=16,
    small_size=32,
    small_batch=4,
    epoch_model="test_resnet",
    epoch_images=20,
    epoch_classes=4,
    epoch_size=32,
    epoch_batch=8,
    epoch_epochs=1,
)

# name -> (function, budget in seconds on the GPU); the budgets add up to 7.5 minutes. A budget
# bounds the stage subprocesses (their timeout) and the speed variants started; the in-process
# checks are sized to end well inside theirs.
CHECKS = {
    "amp_bf16": (lambda c, d, b, f: amp.check_bf16(c, d), 25),
    "amp_fp16_scaler": (lambda c, d, b, f: amp.check_fp16(c, d), 25),
    "amp_agreement": (lambda c, d, b, f: amp.check_amp_agreement(c, d), 15),
    "layout_compile": (lambda c, d, b, f: amp.check_layout_compile(c, d), 45),
    "deterministic": (lambda c, d, b, f: amp.check_deterministic(c, d), 15),
    "oom": (project.check_oom, 30),
    "torchrun": (project.check_torchrun, 35),
    "speed": (lambda c, d, b, f: speed.check_speed(c, d, b), 150),
    "epoch": (project.check_epoch, 110),
}


class Budget:
    """A check's time allowance, from its start; `left()` is what a subprocess may take."""

    def __init__(self, seconds: float):
        self.deadline = time.perf_counter() + seconds

    def left(self) -> float:
        return max(1.0, self.deadline - time.perf_counter())


def machine() -> dict:
    cuda = torch.cuda.is_available()
    return {
        "device": torch.cuda.get_device_name(0) if cuda else "cpu (no CUDA)",
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "timm": timm.__version__,
        "cuda": torch.version.cuda if cuda else None,
    }


def run_check(name, function, budget_s: float, sizes, device, folder) -> dict:
    """One check: its result, or `fail` with the error; with its elapsed seconds."""
    start = time.perf_counter()
    print(f"[{name}] budget {budget_s:.0f} s ...", flush=True)
    try:
        result = function(sizes, device, Budget(budget_s), folder)
    except Exception as err:  # one broken check must not stop the others
        traceback.print_exc()
        result = {"status": "fail", "error": f"{type(err).__name__}: {err}"[:500]}
    result["elapsed_s"] = round(time.perf_counter() - start, 1)
    result["budget_s"] = budget_s
    print(f"[{name}] {result['status']} in {result['elapsed_s']} s", flush=True)
    return result


def figures(result: dict) -> str:
    skip = {"status", "elapsed_s", "budget_s", "rows", "output_tail"}
    reason = result["status"].partition(":")[2].strip()
    text = f"{reason}; " if reason else ""
    text += ", ".join(f"{key}={value}" for key, value in result.items() if key not in skip)
    for row in result.get("rows", []):
        text += f"\n{'':<18}{'':<10}{'':>9}  " + ", ".join(f"{k}={v}" for k, v in row.items())
    return text


def print_table(info: dict, results: dict) -> None:
    print(
        f"\nGPU check on {info['device']}, {info['cpu_count']} CPUs, torch {info['torch']}, "
        f"timm {info['timm']}"
    )
    print(f"{'check':<18}{'status':<10}{'seconds':>9}  figures")
    for name, result in results.items():
        status = result["status"].partition(":")[0]
        print(f"{name:<18}{status:<10}{result['elapsed_s']:>9.1f}  {figures(result)}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="CPU, tiny sizes, under 60 s")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the JSON results file")
    parser.add_argument("--only", nargs="+", choices=list(CHECKS), help="run just these checks")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device("cpu" if args.smoke or not torch.cuda.is_available() else "cuda")
    sizes = SMOKE if args.smoke else Sizes()
    info = {**machine(), "mode": "smoke" if args.smoke else "full", "run_on": device.type}
    results, start = {}, time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as folder:
        for name in args.only or CHECKS:
            function, budget_s = CHECKS[name]
            results[name] = run_check(name, function, budget_s, sizes, device, Path(folder))
    info["total_s"] = round(time.perf_counter() - start, 1)
    print_table(info, results)
    write_json(args.out, {"machine": info, "checks": results})
    print(f"\n{len(results)} checks in {info['total_s']} s; results in {args.out}")
    return 1 if any(result["status"] == "fail" for result in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
