"""The official kaggle CLI: finding it, checking its credentials, and calling it."""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from pathlib import Path

from pipeline.io.commands import run_command
from pipeline.io.console import PipelineError

TOKEN_FILES = ("kaggle.json", "access_token", "access_token.txt", "credentials.json")


def credentials_problem(env: Mapping[str, str] | None = None) -> str | None:
    """Why the kaggle CLI will find no credentials, or None when it can find some.

    Mirrors where the kaggle CLI looks: KAGGLE_USERNAME + KAGGLE_KEY or KAGGLE_API_TOKEN in the
    environment, or a token file in KAGGLE_CONFIG_DIR, ~/.kaggle or $XDG_CONFIG_HOME/kaggle.
    """
    env = os.environ if env is None else env
    if (env.get("KAGGLE_USERNAME") and env.get("KAGGLE_KEY")) or env.get("KAGGLE_API_TOKEN"):
        return None
    home = Path.home()
    folders = [Path(env["KAGGLE_CONFIG_DIR"])] if env.get("KAGGLE_CONFIG_DIR") else []
    folders += [home / ".kaggle", Path(env.get("XDG_CONFIG_HOME") or home / ".config") / "kaggle"]
    if any((folder / name).is_file() for folder in folders for name in TOKEN_FILES):
        return None
    return (
        "no Kaggle credentials: create an API token at https://www.kaggle.com/settings/api "
        "and save it as ~/.kaggle/kaggle.json (chmod 600), or set KAGGLE_USERNAME and "
        "KAGGLE_KEY (or KAGGLE_API_TOKEN) in the environment"
    )


def kaggle_executable() -> str:
    """The `kaggle` command's path, once credentials are known to exist."""
    kaggle = shutil.which("kaggle")
    if kaggle is None:
        raise PipelineError(
            "the kaggle command is not installed (it is optional): pip install kaggle"
        )
    problem = credentials_problem()
    if problem:
        raise PipelineError(problem)
    return kaggle


def call_kaggle(args: list[str], competition: str) -> None:
    """Run `kaggle ARGS` with its output on the terminal; a failure becomes one error."""
    run_command(
        [kaggle_executable(), *args],
        lambda failed: (
            f"`kaggle {' '.join(args[:2])} -c {competition}` failed (exit code "
            f"{failed.returncode}; its output is above). Check the competition name, that you "
            f"accepted its rules at https://www.kaggle.com/competitions/{competition}/rules, "
            "and your credentials"
        ),
    )
