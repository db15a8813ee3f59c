"""Download a Kaggle competition's data and submit to it, through the official `kaggle` CLI.

    python -m pipeline.kaggle_cli download [--competition classify-leaves] [--dest DIR] [--force]
    python -m pipeline.kaggle_cli submit [--competition classify-leaves] [--file FILE] [-m NOTE]

The `kaggle` command is optional (`pip install kaggle`) and needs an API token: a
~/.kaggle/kaggle.json from https://www.kaggle.com/settings/api, or KAGGLE_USERNAME and
KAGGLE_KEY (or KAGGLE_API_TOKEN) in the environment. Accept the competition's rules on its
page before the first download. `download` unzips into DEST (default data/<competition>), all or
nothing; `submit` describes the run in the submission message: the git commit (`-dirty` when
tracked files have uncommitted changes), the models, folds, epochs, image size and OOF accuracy.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path

from pipeline.cli import PipelineError, progress, run
from pipeline.config import Params, load_params
from pipeline.files import ENSEMBLE_METRICS, SUBMISSION_FILE, atomic_path, read_json

DEFAULT_COMPETITION = "classify-leaves"
TOKEN_FILES = ("kaggle.json", "access_token", "access_token.txt", "credentials.json")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.kaggle_cli",
        description="Download competition data or submit, with the official kaggle CLI.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    download = commands.add_parser("download", help="download and unzip the competition data")
    submit = commands.add_parser("submit", help="submit a file, describing the run")
    for sub in (download, submit):
        sub.add_argument("--competition", "-c", default=DEFAULT_COMPETITION)
    download.add_argument("--dest", type=Path, help="folder to unzip into (data/<competition>)")
    download.add_argument("--force", action="store_true", help="replace a non-empty --dest")
    submit.add_argument("--file", "-f", type=Path, default=SUBMISSION_FILE)
    submit.add_argument("--message", "-m", default="", help="a note put before the run details")
    return parser.parse_args(argv)


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
    try:
        result = subprocess.run([kaggle_executable(), *args])
    except OSError as err:
        raise PipelineError(f"cannot run kaggle: {err}") from None
    if result.returncode != 0:
        raise PipelineError(
            f"`kaggle {' '.join(args[:2])} -c {competition}` failed (exit code "
            f"{result.returncode}; its output is above). Check the competition name, that you "
            f"accepted its rules at https://www.kaggle.com/competitions/{competition}/rules, "
            "and your credentials"
        )


def unpack(downloaded: Path, out: Path) -> None:
    """Extract every zip in `downloaded` into `out`; move any other file there as it is."""
    for path in sorted(downloaded.iterdir()):
        if path.suffix != ".zip":
            shutil.move(path, out / path.name)
            continue
        try:
            with zipfile.ZipFile(path) as archive:
                members = archive.infolist()
                # ZipFile.extract drops absolute paths and `..`, so members stay inside `out`.
                for member in progress(members, desc=f"unzip {path.name}", unit="file"):
                    archive.extract(member, out)
        except zipfile.BadZipFile as err:
            raise PipelineError(f"{path.name} from kaggle is not a valid zip ({err})") from None


def download(competition: str, dest: Path, force: bool) -> Path:
    """Download the competition's files with kaggle and unpack them into `dest`.

    Args:
        competition: the competition's URL name, e.g. classify-leaves.
        dest: the folder to create; it only appears once everything is unpacked.
        force: replace `dest` if it exists and is not empty.

    Returns:
        `dest`.
    """
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())) and not force:
        raise PipelineError(f"{dest} already exists; remove it, or pass --force to replace it")
    kaggle_executable()  # fail before creating anything
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{dest.name}.download.", dir=dest.parent) as tmp:
        call_kaggle(["competitions", "download", "-c", competition, "-p", tmp], competition)
        if not any(Path(tmp).iterdir()):
            raise PipelineError(f"kaggle downloaded no files for {competition}")
        with atomic_path(dest) as out:
            out.mkdir()
            unpack(Path(tmp), out)
    return dest


def git_version() -> str:
    """The short commit hash, `-dirty` if tracked files changed since; `no-git` outside git."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        changes = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "no-git"
    return commit + ("-dirty" if changes else "")


def run_summary(params: Params) -> str:
    """The run's key settings: models, folds, epochs and image size (per model if they differ)."""
    per_model = {name: params.train.for_model(name) for name in params.train.models}

    def setting(key: str) -> str:
        values = {name: getattr(hp, key) for name, hp in per_model.items()}
        if len(set(values.values())) == 1:
            return str(next(iter(values.values())))
        return ", ".join(f"{name}={value}" for name, value in values.items())

    return (
        f"models {', '.join(per_model)} | folds {','.join(map(str, params.train.folds))} | "
        f"epochs {setting('epochs')} | image_size {setting('image_size')}"
    )


def submission_message(params: Params, note: str = "") -> str:
    """`[note | ]git <commit> | <run_summary> [| OOF acc <x>]` for `kaggle competitions submit`."""
    parts = [note.strip()] if note.strip() else []
    parts += [f"git {git_version()}", run_summary(params)]
    try:
        parts.append(f"OOF acc {read_json(ENSEMBLE_METRICS)['oof_accuracy']:.4f}")
    except (OSError, ValueError, KeyError, TypeError):
        pass  # no finished ensemble to quote
    return " | ".join(parts)


def submit(competition: str, file: Path, note: str) -> str:
    """Submit `file` with a message describing the run; returns the message."""
    if not file.is_file():
        raise PipelineError(f"{file}: no such file; run `dvc repro` to write the submission")
    if file.stat().st_size == 0:
        raise PipelineError(f"{file}: the file is empty")
    message = submission_message(load_params(), note)
    call_kaggle(
        ["competitions", "submit", "-c", competition, "-f", str(file), "-m", message], competition
    )
    return message


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.command == "download":
        dest = download(args.competition, args.dest or Path("data") / args.competition, args.force)
        print(f"kaggle: {args.competition} -> {dest}; set data.root: {dest} in params.yaml")
    else:
        message = submit(args.competition, args.file, args.message)
        print(f"kaggle: submitted {args.file} to {args.competition}: {message}")


if __name__ == "__main__":
    run(main)
