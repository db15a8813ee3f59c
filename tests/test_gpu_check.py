"""benchmarks/gpu_check.py: its smoke run end to end on CPU, and the parsing and arithmetic of
its figures on made-up output (no timings)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from types import SimpleNamespace

import pytest
from helpers.processes import REPO_ROOT, child_env

TIMM_LOG = """\
Train: 0 [   0/2 ( 50%)]  Loss: 5.21 (5.21)  Time: 9.000s,   28.44/s  (9.000s,   28.44/s)  LR: 1e-03
Train: 0 [   1/2 (100%)]  Loss: 5.20 (5.20)  Time: 0.064s, 4000.00/s  (4.532s,   56.49/s)  LR: 1e-03
Test: [   0/1]  Time: 0.151 (0.151)  Loss:   5.1 ( 5.1)  Acc@1:  0.0 ( 0.0)
Train: 1 [   0/3 ( 33%)]  Loss: 5.19 (5.19)  Time: 0.128s, 2000.00/s  (0.128s, 2000.00/s)  LR: 5e-04
Train: 1 [   1/3 ( 67%)]  Loss: 5.18 (5.18)  Time: 0.064s, 4000.00/s  (0.096s, 2666.67/s)  LR: 5e-04
Train: 1 [   2/3 (100%)]  Loss: 5.17 (5.17)  Time: 0.064s, 4000.00/s  (0.085s, 3000.00/s)  LR: 5e-04
"""


@pytest.mark.slow  # 60-90 s on a loaded 2-core CPU: four stage or timm subprocesses
def test_smoke_run_records_every_check(tmp_path):
    import gpu_check

    out = tmp_path / "gpu_check.json"
    command = [sys.executable, "benchmarks/gpu_check.py", "--smoke", "--out", str(out)]
    result = subprocess.run(command, cwd=REPO_ROOT, env=child_env(), capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["machine"]["cpu_count"] == os.cpu_count()
    assert {"device", "torch", "timm"} <= set(report["machine"])
    checks = report["checks"]
    assert set(checks) == set(gpu_check.CHECKS)
    for name, check in checks.items():
        assert check["status"].startswith(("pass", "skipped")), (name, check)
        assert "elapsed_s" in check
    assert re.search(r"^check +status +seconds  figures$", result.stdout, re.MULTILINE)
    for name in gpu_check.CHECKS:
        assert f"\n{name} " in result.stdout
    # The new measurements ran through stage train and the runner's training-pass timer.
    assert checks["stage_resnet50"]["img_s_from"] == "training pass"
    assert checks["stage_resnet50_compiled"]["status"].startswith("skipped")
    assert checks["preset"]["projected_total_min"] > 0
    summary = report["side_by_side"]
    assert summary["stage_eager_img_s"] > 0
    if checks["anchor"]["status"] == "pass":  # skipped where ../shared/anchors/timm is absent
        assert summary["stage_eager_over_anchor"] > 0
    assert "Side by side, measured in this call" in result.stdout


def test_budgets_fit_one_eight_minute_call():
    import gpu_check

    assert sum(budget for _, budget in gpu_check.CHECKS.values()) <= 7.75 * 60


def test_anchor_steady_rate_is_the_last_epochs_images_over_its_step_times():
    from gpu_check_anchor import steady_rates

    figures = steady_rates(TIMM_LOG)
    # 3 steps of one batch B in 0.128 + 0.064 + 0.064 s (B = 256): 3 B / 0.256 s = 3000 img/s.
    assert figures == {
        "epochs_logged": 2,
        "steady_steps": 3,
        "img_s": 3000.0,
        "img_s_median_step": 4000.0,
    }
    assert "img_s" not in steady_rates(TIMM_LOG.split("Test:")[0])  # the warm-up epoch only


def test_anchor_folder_from_the_environment_or_none(tmp_path, monkeypatch):
    import gpu_check_anchor

    monkeypatch.setenv(gpu_check_anchor.ANCHOR_ENV, str(tmp_path))
    assert gpu_check_anchor.find_anchor() is None
    result = gpu_check_anchor.check_anchor(None, None, None, tmp_path)
    assert (
        result["status"].startswith("skipped: no timm anchor") and str(tmp_path) in result["status"]
    )
    (tmp_path / "train.py").write_text("")
    (tmp_path / "timm").mkdir()
    assert gpu_check_anchor.find_anchor() == tmp_path.resolve()


def test_anchor_candidates_default_to_the_carried_copy_then_the_shared_one(monkeypatch):
    import gpu_check_anchor

    monkeypatch.delenv(gpu_check_anchor.ANCHOR_ENV, raising=False)
    assert gpu_check_anchor.anchor_candidates() == [
        REPO_ROOT / ".anchor" / "timm",
        REPO_ROOT.parent / "shared" / "anchors" / "timm",
    ]


def stage_result(stdout: str, returncode: int = 0):
    return subprocess.CompletedProcess([], returncode, stdout, "")


def test_steady_img_s_from_the_training_pass_else_the_whole_epoch():
    from gpu_check_runner import TRAIN_SECONDS_PREFIX
    from gpu_check_stage import steady_figures

    epochs = "epoch   1/2  loss 1.0 | 30.0s  *\nepoch   2/2  loss 0.9 | 12.0s  *\n"
    timed = f"{TRAIN_SECONDS_PREFIX} 25.0\n{TRAIN_SECONDS_PREFIX} 10.0\n"
    with_passes = steady_figures(stage_result(timed + epochs), 15000)
    assert with_passes["img_s"] == 1500.0 and with_passes["img_s_from"] == "training pass"
    assert with_passes["epoch_s"] == [30.0, 12.0]
    whole = steady_figures(stage_result(epochs), 15000)
    assert whole["img_s"] == 1250.0 and whole["img_s_from"].startswith("whole epoch")
    timed_out = steady_figures(stage_result("epoch   1/2  loss 1.0 | 30.0s\n", 124), 15000)
    assert "img_s" not in timed_out and timed_out["exit_code"] == 124


def test_projection_is_five_folds_of_this_run_plus_the_steady_epochs_to_thirty():
    from gpu_check_stage import projected_minutes

    assert projected_minutes(run_s=60, steady_epoch_s=12, epochs_run=2) == 5 * (60 + 28 * 12) / 60


def test_side_by_side_ratios_and_targets():
    from gpu_check_anchor import side_by_side, verdict

    checks = {
        "anchor": {"img_s": 4000.0},
        "stage_resnet50": {"img_s": 5200.0},
        "stage_resnet50_compiled": {"status": "skipped: no CUDA"},
        "preset": {"projected_total_min": 31.5},
    }
    summary = side_by_side(checks)
    assert summary["stage_eager_over_anchor"] == 1.3
    assert summary["stage_compiled_img_s"] is None and "stage_compiled_over_anchor" not in summary
    assert verdict(summary["stage_eager_over_anchor"], summary["target_ratio"], True) == "met"
    assert verdict(31.5, summary["target_preset_min"], False) == "NOT met"
    assert side_by_side({})["anchor_img_s"] is None


def test_stage_speed_runs_ask_for_the_device_path_and_report_the_one_taken():
    import gpu_check
    from gpu_check_stage import data_path, speed_overrides

    loader = speed_overrides(gpu_check.SMOKE, SimpleNamespace(type="cpu"), False)["train"]["loader"]
    assert loader["augment_on"] == "device"
    assert data_path("x\naugmented on the device: train.loader.augment_on: device\n") == "device"
    assert data_path("no such line") == "unknown"


def test_preset_networks_keep_their_names_and_settings():
    import gpu_check
    from gpu_check_stage import network_overrides, preset_networks

    preset, networks = preset_networks(gpu_check.Sizes())
    assert list(networks) == ["resnext50_32x4d", "resnest50d", "efficientnet_b3"]
    assert "data" not in preset
    cpu = SimpleNamespace(type="cpu")
    train = network_overrides(
        gpu_check.Sizes(), cpu, preset, "efficientnet_b3", networks["efficientnet_b3"]
    )["train"]
    assert train["models"] == {"efficientnet_b3": networks["efficientnet_b3"]}
    assert networks["efficientnet_b3"]["optimizer"]["lr"] > 0
    assert train["defaults"]["pretrained"] is False and train["defaults"]["epochs"] == 2
    assert train["defaults"]["ema"] == preset["train"]["defaults"]["ema"]  # the preset's, kept
    _, smoke = preset_networks(gpu_check.SMOKE)
    assert smoke == {"resnext50_32x4d": {"backbone": "test_resnet"}}


def test_oom_cap_is_a_few_gib_on_any_card():
    from gpu_check_project import OOM_GPU_MEMORY_GIB
    from gpu_check_runner import memory_fraction, parse_args

    assert memory_fraction(OOM_GPU_MEMORY_GIB, 139 * 2**30) == pytest.approx(3 / 139)
    assert memory_fraction(OOM_GPU_MEMORY_GIB, 2 * 2**30) == 1.0
    args = parse_args(["--gpu-memory-gib", "3", "--", "--model", "resnet50", "--fold", "0"])
    assert args.gpu_memory_gib == 3 and args.stage_args == ["--model", "resnet50", "--fold", "0"]
