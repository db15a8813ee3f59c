"""`pipeline.tools.validate` stays light: no torch or albumentations, and no params.yaml needed."""

from __future__ import annotations

import subprocess
import sys

from helpers.processes import REPO_ROOT, child_env

HEAVY = ("torch", "albumentations", "cv2", "timm")


def python(*args: str, cwd=REPO_ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_validate_and_submission_import_no_heavy_module():
    code = (
        "import sys, pipeline.tools.validate, pipeline.competition.submission; "
        f"print([m for m in {HEAVY!r} if m in sys.modules])"
    )
    result = python("-c", code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_validate_help():
    result = python("-m", "pipeline.tools.validate", "--help")
    assert result.returncode == 0 and "--test-csv" in result.stdout


def test_validate_runs_without_params_yaml(tmp_path):
    (tmp_path / "train.csv").write_text("image,label\nimages/1.jpg,acer\nimages/2.jpg,ilex\n")
    (tmp_path / "test.csv").write_text("image\nimages/3.jpg\nimages/4.jpg\n")
    good = tmp_path / "good.csv"
    good.write_text("image,label\nimages/3.jpg,ilex\nimages/4.jpg,acer\n")
    bad = tmp_path / "bad.csv"
    bad.write_text("image,label\nimages/4.jpg,acer\nimages/3.jpg,ilex\n")
    reference = ["--test-csv", "test.csv", "--train-csv", "train.csv"]
    assert not (tmp_path / "params.yaml").exists()

    result = python("-m", "pipeline.tools.validate", "good.csv", *reference, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("OK: good.csv: 2 rows")

    result = python("-m", "pipeline.tools.validate", "bad.csv", *reference, cwd=tmp_path)
    assert result.returncode == 2
    assert "differ from test.csv's order" in result.stderr and "Traceback" not in result.stderr
