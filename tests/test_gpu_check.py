"""benchmarks/gpu_check.py --smoke: the GPU device check's code runs end to end on CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


@pytest.mark.slow  # about a minute on a loaded 2-core CPU: three stage subprocesses
def test_smoke_run_records_every_check(tmp_path):
    import gpu_check

    out = tmp_path / "gpu_check.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "benchmarks/gpu_check.py", "--smoke", "--out", str(out)]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["machine"]["cpu_count"] == os.cpu_count()
    assert {"device", "torch", "timm"} <= set(report["machine"])
    assert set(report["checks"]) == set(gpu_check.CHECKS)
    for name, check in report["checks"].items():
        assert check["status"].startswith(("pass", "skipped")), (name, check)
        assert "elapsed_s" in check
    assert "check             status" in result.stdout  # the table
    for name in gpu_check.CHECKS:
        assert f"\n{name} " in result.stdout
