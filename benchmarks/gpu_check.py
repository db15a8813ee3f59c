"""Every GPU measurement of the pipeline in one command: pass/fail and figures per check.

    python3 benchmarks/gpu_check.py                      # on one H100/H200: at most 8 minutes
    python3 benchmarks/gpu_check.py --smoke --out /tmp/gpu_check.json   # CPU, tiny, ~90 s

Checks (see BENCHMARKS.md "GPU device check"):
  a. amp_bf16, amp_fp16_scaler, amp_agreement, layout_compile, deterministic (in-process, the
     real engine and device helpers); oom (stage train under a GPU memory cap) and torchrun.
  b. speed: train images/s of ResNet-50 through the real cache, loaders and engine, against
     throughput.py's naive baseline and the synthetic ceiling, and TTA inference images/s.
  c. leaves_project, stage_resnet50, preset, stage_resnet50_compiled: stage train on a
     Classify-Leaves-sized project: ResNet-50's steady training img/s, eager and compiled; each
     network of the GPU preset, projected to 5 folds x 30 epochs.
  d. anchor: timm's own train.py on the same images, and stage train's ResNet-50 img/s over
     its, printed side by side with the targets.
One check that raises is recorded as `fail` with its error and the others still run. Each has
a time budget; checks that measure several variants stop starting new ones when it runs out.
Prints a table and writes JSON (the machine, every check, the side-by-side figures) to --out.
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
import gpu_check_anchor as anchor  # noqa: E402
import gpu_check_project as project  # noqa: E402
import gpu_check_speed as speed  # noqa: E402
import gpu_check_stage as stage  # noqa: E402
import timm  # noqa: E402
import torch  # noqa: E402

from pipeline.io.files import write_json  # noqa: E402

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
    speed_reserve_s: float = 20  # do not start a variant with less left
    speed_variants: tuple = (("resnet50", 256, False),)  # stage_resnet50_compiled compiles
    stage_model: str = "resnet18"
    small_images: int = 64
    small_size: int = 64
    small_batch: int = 16
    # The Classify-Leaves-sized project of the anchor, stage_resnet50 and preset checks.
    leaves_images: int = 18353  # Classify Leaves' train.csv
    leaves_classes: int = 176
    leaves_size: int = 224
    stage_epochs: int = 2  # the last one is the steady one
    stage_speed_model: str = "resnet50"
    stage_speed_batch: int = 256
    stage_speed_compiled: bool = True
    stage_reserve_s: float = 20  # do not start a preset network with less left
    preset_networks: int | None = None  # the first N of the preset's; None: all
    preset_backbone: str | None = None  # trained under the preset's names instead (smoke)
    preset_batch: int | None = None  # None: the preset's
    preset_workers: int | None = None  # None: the preset's
    anchor_model: str = "resnet50"
    anchor_images: int = 6400  # 25 steps of 256 an epoch, as ../shared/anchors/README.md's
    anchor_valid_images: int = 352
    anchor_batch: int = 256
    anchor_epochs: int = 2
    anchor_on_cpu: bool = False


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
    leaves_images=20,
    leaves_classes=4,
    leaves_size=32,
    stage_speed_model="test_resnet",
    stage_speed_batch=4,
    stage_speed_compiled=False,
    stage_reserve_s=0,
    preset_networks=1,
    preset_backbone="test_resnet",
    preset_batch=4,
    preset_workers=0,
    anchor_model="test_resnet",
    anchor_images=12,
    anchor_valid_images=4,
    anchor_batch=4,
    anchor_on_cpu=True,
)

# name -> (function, budget in seconds on the GPU); the budgets add up to 7.7 minutes. A budget
# bounds the subprocesses (their timeout) and the variants started; the in-process checks are
# sized to end well inside theirs. leaves_project builds the project that the four checks after
# it share; the slowest to start, the compile, comes last.
CHECKS = {
    "amp_bf16": (lambda c, d, b, f: amp.check_bf16(c, d), 10),
    "amp_fp16_scaler": (lambda c, d, b, f: amp.check_fp16(c, d), 10),
    "amp_agreement": (lambda c, d, b, f: amp.check_amp_agreement(c, d), 8),
    "layout_compile": (lambda c, d, b, f: amp.check_layout_compile(c, d), 30),
    "deterministic": (lambda c, d, b, f: amp.check_deterministic(c, d), 7),
    "oom": (project.check_oom, 20),
    "torchrun": (project.check_torchrun, 20),
    "speed": (lambda c, d, b, f: speed.check_speed(c, d, b), 25),
    "leaves_project": (project.check_leaves_project, 40),
    "anchor": (anchor.check_anchor, 40),
    "stage_resnet50": (stage.check_stage_resnet50, 40),
    "preset": (stage.check_preset, 120),
    "stage_resnet50_compiled": (stage.check_stage_resnet50_compiled, 90),
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
    pairs = ", ".join(f"{key}={value}" for key, value in result.items() if key not in skip)
    text = "; ".join(part for part in (reason, pairs) if part)
    for row in result.get("rows", []):
        pairs = ", ".join(f"{k}={v}" for k, v in row.items() if k not in skip)
        text += f"\n{'':<24}{'':<10}{'':>9}  " + pairs
    return text


def print_table(info: dict, results: dict) -> None:
    print(
        f"\nGPU check on {info['device']}, {info['cpu_count']} CPUs, torch {info['torch']}, "
        f"timm {info['timm']}"
    )
    print(f"{'check':<24}{'status':<10}{'seconds':>9}  figures")
    for name, result in results.items():
        status = result["status"].partition(":")[0]
        print(f"{name:<24}{status:<10}{result['elapsed_s']:>9.1f}  {figures(result)}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="CPU, tiny sizes, about 90 s")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the JSON results file")
    parser.add_argument("--only", nargs="+", choices=list(CHECKS), help="run just these checks")
    parser.add_argument(
        "--anchor-timm",
        type=Path,
        help=f"timm's train.py and timm/ (sets ${anchor.ANCHOR_ENV}); default: the first of "
        ".anchor/timm, ../shared/anchors/timm",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.anchor_timm is not None:
        os.environ[anchor.ANCHOR_ENV] = str(args.anchor_timm.resolve())
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
    summary = anchor.side_by_side(results)
    anchor.print_side_by_side(summary, args.smoke)
    write_json(args.out, {"machine": info, "checks": results, "side_by_side": summary})
    print(f"\n{len(results)} checks in {info['total_s']} s; results in {args.out}")
    return 1 if any(result["status"] == "fail" for result in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
