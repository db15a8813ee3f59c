"""Download a Kaggle competition's data and submit to it, through the official `kaggle` CLI.

    leaf kaggle download [--competition classify-leaves] [--dest DIR] [--force] [--no-dvc-add]
    leaf kaggle submit [--competition classify-leaves] [--file FILE] [-m NOTE]
        [--test-csv CSV] [--classes JSON | --train-csv CSV]
    leaf kaggle notebook [...] | leaf kaggle push [--dir DIR]   (pipeline/tools/kernel.py)

The `kaggle` command is optional (`pip install kaggle`) and needs an API token: a
~/.kaggle/kaggle.json from https://www.kaggle.com/settings/api, or KAGGLE_USERNAME and
KAGGLE_KEY (or KAGGLE_API_TOKEN) in the environment. Accept the competition's rules on its
page before the first download. `download` unzips into DEST (default data/<competition>), all or
nothing, then, inside a DVC project, runs `dvc add DEST` (not with --no-dvc-add) so that
`dvc exp run --temp`/`--queue` and `dvc push`/`pull` carry the data. `submit` first checks the
file against test.csv and the training classes (as `pipeline.tools.validate` does) and refuses
an invalid one; it refuses a file made from the synthetic data stage generate draws, warns when
the file was made from another data.root than the competition's, and describes the run in the
submission message: the git commit (`-dirty` when tracked files have uncommitted changes) and,
from stage submit's record of the file (submissions/submission.json, not params.yaml), the
models, folds, epochs, image size and OOF accuracy.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from pipeline.competition.dvc_cli import dvc_add
from pipeline.competition.kaggle_api import call_kaggle, kaggle_executable
from pipeline.competition.submission import (
    SubmissionError,
    check_submission,
    load_reference,
    read_record,
)
from pipeline.config.params import PARAMS_FILE, load_params
from pipeline.config.paths import SUBMISSION_FILE, SYNTHETIC_DIR, is_synthetic_root
from pipeline.config.schema import DataParams
from pipeline.io import console
from pipeline.io.console import PipelineError, command_parser, progress, warn
from pipeline.io.files import atomic_path, file_md5
from pipeline.tools import kernel
from pipeline.tools.validate import add_reference_arguments

DEFAULT_COMPETITION = "classify-leaves"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    commands = parser.add_subparsers(
        dest="command", metavar="{download,submit,notebook,push}", required=True
    )
    download = commands.add_parser("download", help="download and unzip the competition data")
    submit = commands.add_parser("submit", help="submit a file, describing the run")
    for sub in (download, submit):
        sub.add_argument(
            "--competition",
            "-c",
            default=DEFAULT_COMPETITION,
            help=f"the competition's URL name (default: {DEFAULT_COMPETITION})",
        )
    download.add_argument("--dest", type=Path, help="folder to unzip into (data/<competition>)")
    download.add_argument("--force", action="store_true", help="replace a non-empty --dest")
    download.add_argument(
        "--no-dvc-add",
        dest="dvc_add",
        action="store_false",
        help="do not run `dvc add DEST` afterwards (it runs inside a DVC project)",
    )
    submit.add_argument(
        "--file", "-f", type=Path, default=SUBMISSION_FILE, help=f"(default: {SUBMISSION_FILE})"
    )
    submit.add_argument("--message", "-m", default="", help="a note put before the run details")
    add_reference_arguments(submit)  # what validate checks against
    kernel.add_commands(commands, DEFAULT_COMPETITION)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    return command_parser("leaf kaggle", __doc__, add_arguments).parse_args(argv)


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


def run_summary(record: dict[str, Any]) -> str:
    """A submission record's key settings: models, folds, epochs and image size (per model if
    they differ)."""
    per_model = record.get("models") or {}

    def setting(key: str) -> str:
        values = {name: settings.get(key) for name, settings in per_model.items()}
        if len(set(values.values())) == 1:
            return str(next(iter(values.values())))
        return ", ".join(f"{name}={value}" for name, value in values.items())

    return (
        f"models {', '.join(per_model)} | folds {','.join(map(str, record.get('folds', [])))} | "
        f"epochs {setting('epochs')} | image_size {setting('image_size')}"
    )


def submission_message(record: dict[str, Any] | None, note: str = "") -> str:
    """`[note | ]git <commit> | <run_summary> [| OOF acc <x> (<y> cross-fitted)]` for
    `kaggle competitions submit`; with one fold scored, the fitted weights' <x> beside the
    equal weights' figure instead.

    `record` is stage submit's record of the file (None: a file it did not write).
    """
    parts = [note.strip()] if note.strip() else []
    parts.append(f"git {git_version()}")
    if record is None:
        parts.append("params unknown (not written by stage submit)")
    else:
        parts.append(run_summary(record))
        fitted = record.get("oof_accuracy")
        if isinstance(fitted, (int, float)):
            parts.append(f"OOF acc {fitted:.4f}{honest_figure(record, fitted)}")
    return " | ".join(parts)


def honest_figure(record: dict[str, Any], fitted: float) -> str:
    """` (<y> cross-fitted)`, or with one fold scored (nothing to cross-fit on) the equal
    weights' figure where the fitted weights' differs: they were scored on their own fold."""
    cross, equal = record.get("oof_accuracy_fitted_cross"), record.get("oof_accuracy_equal")
    if isinstance(cross, (int, float)):
        return f" ({cross:.4f} cross-fitted)"
    if isinstance(equal, (int, float)) and equal != fitted:
        return f" fitted on its one fold ({equal:.4f} with equal weights)"
    return ""


def record_of(file: Path) -> dict[str, Any] | None:
    """Stage submit's record of `file` (<file>.json beside it), None unless it describes exactly
    these bytes: a file edited or replaced since was not made with the recorded params."""
    record = read_record(file.with_suffix(".json"))
    if record is None or record.get("md5") != file_md5(file):
        return None
    return record


def refuse_synthetic(root: str | None, competition: str) -> None:
    """A submission made from the data stage generate draws is never a competition's."""
    if root is not None and is_synthetic_root(root) and SYNTHETIC_DIR.name != competition:
        raise PipelineError(
            f"not submitted: the submission was made from data.root = {root}, the synthetic "
            f"leaves stage generate draws, which {competition} does not score; set data.root to "
            f"{competition}'s data (leaf kaggle download {competition}) and run dvc repro"
        )


def competition_warning(root: str | None, competition: str) -> str | None:
    """Why the data the submission was made from may not be `competition`'s, or None."""
    if root is None or Path(root).name == competition:
        return None
    return (
        f"the submission was made from data.root = {root}, not from {competition}'s data "
        f"(e.g. data/{competition}); Kaggle scores it against {competition}'s test set"
    )


def submit(
    competition: str,
    file: Path,
    note: str,
    test_csv: Path | None = None,
    classes: Path | None = None,
    train_csv: Path | None = None,
) -> str:
    """Check `file`, then submit it with a message describing the run; returns the message.

    The file must pass `pipeline.tools.validate`'s check against test.csv and the training
    classes (the prepared data unless `test_csv` and `classes`/`train_csv` are given); an invalid
    one is refused before kaggle runs. The message and the header checked come from stage
    submit's record of the file (submissions/submission.json), not from params.yaml.
    """
    if not file.is_file():
        raise PipelineError(f"{file}: no such file; run `dvc repro` to write the submission")
    if file.stat().st_size == 0:
        raise PipelineError(f"{file}: the file is empty")
    record = record_of(file)
    if record is None:
        warn(
            f"{file.with_suffix('.json')} does not describe {file} (missing, or the file changed "
            "since stage submit wrote it): the message cannot name the params it was made with"
        )
        known = PARAMS_FILE.is_file()
        data = load_params().data if known else DataParams()
        root = data.root if known else None
        tables, columns = [data.image_col, data.label_col], data.submission_header
    else:
        data = record.get("data") or {}
        root = data.get("root")
        tables = [data.get("image_col", "image"), data.get("label_col", "label")]
        columns = data.get("submission_columns") or tables  # absent from older records
    test_images, names = load_reference(test_csv, classes, train_csv, tables)
    try:
        check_submission(file, test_images, names, columns)
    except SubmissionError as err:
        raise SubmissionError(f"not submitted: {err}") from None
    refuse_synthetic(root, competition)
    problem = competition_warning(root, competition)
    if problem:
        warn(problem)
    message = submission_message(record, note)
    call_kaggle(
        ["competitions", "submit", "-c", competition, "-f", str(file), "-m", message], competition
    )
    return message


def main(argv: list[str] | None = None) -> None:
    run(parse_args(argv))


def run(args: argparse.Namespace) -> None:
    if args.command in kernel.COMMANDS:
        kernel.run(args, kaggle_executable)
    elif args.command == "download":
        dest = download(args.competition, args.dest or Path("data") / args.competition, args.force)
        print(f"kaggle: {args.competition} -> {dest}")
        if args.dvc_add:
            print(dvc_add(dest))
        print(f"set data.root: {dest} in params.yaml (or dvc exp run -S data.root={dest})")
    else:
        message = submit(
            args.competition,
            args.file,
            args.message,
            args.test_csv,
            args.classes,
            args.train_csv,
        )
        print(f"kaggle: submitted {args.file} to {args.competition}: {message}")


if __name__ == "__main__":
    console.run(main)
