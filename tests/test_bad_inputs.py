"""Missing, empty, corrupt or degenerate inputs: one `error:` paragraph, exit code 2, no traceback,
and nothing that already existed is changed. Stage prepare's empty and degenerate data:
test_bad_inputs_prepare.py."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.processes import child_env

from pipeline.config.schema import TrainParams
from pipeline.ensemble.cells import read_cell
from pipeline.io.console import PipelineError
from pipeline.stages import ensemble as ensemble_stage
from pipeline.stages.split import check_class_counts
from pipeline.training.device import resolve_device

CHECKED_DIRS = ("data", "models", "results", "submissions")
MODEL = "d2l_resnet11"
GARBAGE = bytes(range(256)) * 4 + b"\x00garbage\xff\n,,\n"

# Each stage, and the upstream inputs it reads (the stages meta and pseudo are off in the tiny
# run, so they read nothing). Train's test.csv and cache index are read like folds.csv is.
STAGE_INPUTS = {
    "split": ["data/prepared/train.csv"],
    "cache": ["data/prepared/train.csv", "data/prepared/test.csv"],
    "train": [
        "data/folds.csv",
        "data/prepared/classes.json",
        "data/cache/images.npy",
        "data/cache/orientation.json",
    ],
    "ensemble": [
        "data/folds.csv",
        "data/prepared/classes.json",
        f"models/{MODEL}/fold1/oof.npz",
        f"models/{MODEL}/fold0/test_logits.npy",
    ],
    "submit": [
        "data/prepared/test.csv",
        "data/prepared/classes.json",
        "data/ensemble/test_logits.npy",
    ],
}
KINDS = ("missing", "empty", "corrupt")
# Train starts slowest (torch, the model registry): its inputs get one kind each beyond folds.csv.
TRAIN_KINDS = {
    "data/prepared/classes.json": ("missing", "corrupt"),
    "data/cache/images.npy": ("corrupt",),
    "data/cache/orientation.json": ("missing",),  # a cache built before it existed
}
CASES = [
    (stage, path, kind)
    for stage, paths in STAGE_INPUTS.items()
    for path in paths
    for kind in (TRAIN_KINDS.get(path, KINDS) if stage == "train" else KINDS)
]


def fingerprints(root: Path) -> dict[str, str]:
    """md5 of every file under the output folders, by path relative to `root`."""
    sums = {}
    for folder in CHECKED_DIRS:
        for path in sorted((root / folder).rglob("*")):
            if path.is_file():
                sums[path.relative_to(root).as_posix()] = hashlib.md5(path.read_bytes()).hexdigest()
    return sums


def run_stage(workdir: Path, stage: str, *args: str) -> subprocess.CompletedProcess:
    env = child_env(LEAF_QUIET="1")
    command = [sys.executable, "-m", f"pipeline.stages.{stage}", *args]
    if stage == "train":
        command += ["--model", MODEL, "--fold", "0"]
    return subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True)


def run_tool(workdir: Path, tool: str, *args: str) -> subprocess.CompletedProcess:
    env = child_env(LEAF_QUIET="1")
    command = [sys.executable, "-m", f"pipeline.tools.{tool}", *args]
    return subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True)


def assert_clean_error(result: subprocess.CompletedProcess, *fragments: str) -> str:
    message = result.stderr
    assert result.returncode == 2, f"exit {result.returncode}:\n{result.stdout}\n{message}"
    assert "error:" in message and "Traceback" not in message, message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in:\n{message}"
    return message


def break_input(path: Path, kind: str) -> None:
    if kind == "missing":
        path.unlink()
    elif kind == "empty":
        path.write_bytes(b"")
    else:
        path.write_bytes(GARBAGE)


# ----------------------------------------------------------------------------------------------
# The matrix: every stage with each upstream input missing, empty and corrupt


@pytest.mark.parametrize(
    ("stage", "name", "kind"), CASES, ids=[f"{s}-{n}-{k}" for s, n, k in CASES]
)
def test_broken_input_stops_stage_cleanly(run_copy, stage, name, kind):
    before = fingerprints(run_copy)
    break_input(run_copy / name, kind)
    message = assert_clean_error(run_stage(run_copy, stage), name)
    if kind == "missing":
        assert "not found" in message and "dvc repro" in message
    after = fingerprints(run_copy)
    before.pop(name)
    after.pop(name, None)
    assert after == before, "an existing output changed"


# The tools: what each reads of a finished run. predict skips a cell whose best.pt is missing
# (documented), so only an empty or corrupt one is an error for it.
TOOL_CASES = [("preview", "data/prepared/train.csv", kind) for kind in KINDS] + [
    ("predict", f"models/{MODEL}/fold0/best.pt", kind) for kind in ("empty", "corrupt")
]


@pytest.mark.parametrize(
    ("tool", "name", "kind"), TOOL_CASES, ids=[f"{t}-{n}-{k}" for t, n, k in TOOL_CASES]
)
def test_broken_input_stops_tool_cleanly(run_copy, tool, name, kind):
    before = fingerprints(run_copy)
    break_input(run_copy / name, kind)
    args = ["--out", "grid.png"] if tool == "preview" else ["data/synthetic/images"]
    assert_clean_error(run_tool(run_copy, tool, *args), name)
    after = fingerprints(run_copy)
    before.pop(name)
    after.pop(name, None)
    assert after == before, "an existing output changed"
    assert not (run_copy / "grid.png").exists()


def test_train_without_prepared_folder_names_it(run_copy):
    import shutil

    shutil.rmtree(run_copy / "data/prepared")
    assert_clean_error(run_stage(run_copy, "train"), "data/prepared/", "dvc repro prepare")


# ----------------------------------------------------------------------------------------------
# Cells: corrupt archives and logits of the wrong shape


def test_read_cell_reports_corrupt_oof(run_copy):
    (run_copy / f"models/{MODEL}/fold0/oof.npz").write_bytes(b"PK\x03\x04" + GARBAGE)
    with pytest.raises(PipelineError, match=r"oof.npz: corrupt .*dvc repro train"):
        read_cell(MODEL, 0)


def test_missing_oof_is_named_as_a_file(run_copy):
    (run_copy / f"models/{MODEL}/fold0/oof.npz").unlink()
    with pytest.raises(PipelineError, match=rf"models/{MODEL}/fold0/oof.npz: not found"):
        read_cell(MODEL, 0)


@pytest.mark.parametrize("shape", ["rows", "classes", "axes"])
def test_ensemble_refuses_test_logits_of_the_wrong_shape(run_copy, shape):
    path = run_copy / f"models/{MODEL}/fold1/test_logits.npy"
    logits = np.load(path)
    wrong = {
        "rows": logits[:-1],
        "classes": np.pad(logits, ((0, 0), (0, 1))),
        "axes": logits.ravel(),
    }[shape]
    np.save(path, wrong)
    with pytest.raises(PipelineError, match="test_logits.npy"):
        ensemble_stage.main([])


def test_ensemble_refuses_oof_logits_of_the_wrong_shape(run_copy):
    path = run_copy / f"models/{MODEL}/fold0/oof.npz"
    with np.load(path) as saved:
        rows, logits = saved["row"], saved["logits"]
    np.savez(path, row=rows, logits=logits[:, :-1])
    with pytest.raises(PipelineError, match="oof.npz: logits for 2 classes"):
        ensemble_stage.main([])


# ----------------------------------------------------------------------------------------------
# Tools' output paths and the device


def test_predict_csv_pointing_at_a_folder_or_unwritable_path(run_copy):
    image = next((run_copy / "data/synthetic").rglob("*.jpg"))
    (run_copy / "out").mkdir()
    assert_clean_error(run_tool(run_copy, "predict", str(image), "--csv", "out"), "--csv out")
    (run_copy / "a_file").write_text("x")
    assert_clean_error(
        run_tool(run_copy, "predict", str(image), "--csv", "a_file/top.csv"), "not a folder"
    )


def test_preview_out_pointing_at_a_folder(run_copy):
    (run_copy / "grid.png").mkdir()
    assert_clean_error(run_tool(run_copy, "preview", "--out", "grid.png"), "--out grid.png")


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="this machine has MPS")
def test_mps_without_mps_is_a_clear_error():
    with pytest.raises(PipelineError, match="MPS is not available"):
        resolve_device("mps")


# ----------------------------------------------------------------------------------------------
# Messages that tell the truth


@pytest.mark.parametrize("name", ["my model", "a/b", "x\\y", "é", "..", "-", "m;rm"])
def test_model_names_the_command_line_cannot_carry_are_refused(name):
    if name == "-":
        TrainParams(models={name: {}})  # odd but harmless: [A-Za-z0-9_.:-]
        return
    with pytest.raises(ValueError, match="may use only letters"):
        TrainParams(models={name: {}})


def test_rare_classes_are_named_five_then_counted(capsys):
    import pandas as pd

    labels = pd.Series(["a", "a", "b"] + [f"c{i}" for i in range(12)])
    check_class_counts(labels, 2)  # "a" fills both folds: a warning, not an error
    warning = capsys.readouterr().err
    assert "13 class(es) have fewer images than folds" in warning
    assert "and 8 more" in warning  # 13 classes too small: 5 named, then the count


def test_single_image_classes_do_not_advise_one_fold():
    import pandas as pd

    with pytest.raises(PipelineError) as info:
        check_class_counts(pd.Series([f"c{i}" for i in range(12)]), 2)
    message = str(info.value)
    assert "at most 1" not in message and "every class has a single image" in message


def test_divergence_on_cpu_does_not_suggest_amp():
    from pipeline.config.model_settings import ModelParams
    from pipeline.stages.train import explain_failures
    from pipeline.training.running_metrics import DivergedError

    hp = ModelParams(amp=True)
    error = DivergedError(epoch=1, step=1, steps=2, loss=float("nan"))
    for device, advised in ((torch.device("cpu"), False), (torch.device("cuda"), True)):
        with pytest.raises(PipelineError) as info, explain_failures("m", hp, Path("x"), device):
            raise error
        assert ("amp: false" in str(info.value)) is advised
