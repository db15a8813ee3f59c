"""Calling the `dvc` command from the tools: `dvc add` of a data folder, `dvc exp show --json`."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

from pipeline.io.commands import run_command
from pipeline.io.console import PipelineError, warn


def dvc_executable() -> str:
    """The `dvc` command's path; a missing one is an error saying how to install it."""
    dvc = shutil.which("dvc")
    if dvc is None:
        raise PipelineError("the dvc command is not installed: pip install dvc")
    return dvc


def dvc_project(path: Path) -> Path | None:
    """The DVC project (the folder holding .dvc/) that `path` lies in, or None."""
    here = path.resolve()
    return next((d for d in (here, *here.parents) if (d / ".dvc").is_dir()), None)


def dvc_add(dest: Path) -> str:
    """`dvc add dest` when `dest` lies in a DVC project; returns a line saying what was done.

    The data is already in place, so a missing `dvc` or a failed `dvc add` is a warning that
    says how to do it by hand, not an error.
    """
    project = dvc_project(dest.parent)
    if project is None:
        return f"dvc: {dest} is not inside a DVC project; not dvc-added"
    by_hand = f"run `dvc add {dest}` yourself, then git add {dest}.dvc and commit"
    dvc = shutil.which("dvc")
    if dvc is None:
        warn(f"dvc is not installed, so {dest} was not dvc-added; {by_hand}")
        return f"dvc: {dest} not dvc-added"
    try:
        result = subprocess.run([dvc, "add", str(dest)], capture_output=True, text=True)
    except OSError as err:
        result = subprocess.CompletedProcess([dvc], 1, "", str(err))
    if result.returncode != 0:
        warn(f"`dvc add {dest}` failed ({(result.stderr or result.stdout).strip()}); {by_hand}")
        return f"dvc: {dest} not dvc-added"
    ignore = dest.parent / ".gitignore"
    return (
        f"dvc: added {dest} to the DVC cache (dvc add); commit the pointer: "
        f"git add {dest}.dvc {ignore} && git commit -m 'data: {dest.name}'"
    )


def exp_show_json(extra: list[str] | None = None) -> list[dict[str, Any]]:
    """`dvc exp show --json` (plus `extra` flags), parsed; a failure is one error."""
    cmd = [dvc_executable(), "exp", "show", "--json", *(extra or [])]
    result = run_command(
        cmd,
        lambda failed: (
            f"`dvc exp show --json` failed (exit code {failed.returncode}): "
            f"{(failed.stderr or failed.stdout).strip()}"
        ),
        capture_output=True,
        text=True,
    )
    try:
        return json.loads(result.stdout or "[]")
    except json.JSONDecodeError as err:
        raise PipelineError(f"`dvc exp show --json` printed no JSON ({err})") from None
