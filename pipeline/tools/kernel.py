"""Write a Kaggle notebook that runs the pipeline on a competition, and push it with `kaggle`.

    leaf kaggle notebook [--competition classify-leaves] [--user NAME] [--slug SLUG]
        [--title TITLE] [--preset classify-leaves-gpu] [--dir kaggle/kernel]
        [--source repo --repo URL | --source wheel --wheel-dataset USER/DATASET]
        [--weights-dataset USER/DATASET] [--no-internet] [--no-gpu] [-S KEY=VALUE ...]
    leaf kaggle push [--dir kaggle/kernel]

`notebook` writes DIR (default kaggle/kernel) with <slug>.ipynb and kernel-metadata.json. The
notebook installs the project (pip from --repo, or offline from the wheels of --wheel-dataset),
copies the installed package into /kaggle/working/<project> beside the dvc.yaml, params.yaml
and preset of the checkout it was written from, applies the preset with data.root set to the
competition's folder under /kaggle/input (`leaf preset NAME --write -S ...`), runs `dvc repro
submit` (on the GPU when there is one) and leaves submission.csv, validated, in
/kaggle/working. The Kaggle root is $LEAF_KAGGLE_ROOT when set (default /kaggle), and
LEAF_KAGGLE_SKIP_INSTALL=1 skips pip when the package is already importable (for tests).
`push` runs `kaggle kernels push -p DIR`, then reports the kernel's URL and
`kaggle kernels status`. docs/kaggle.md walks through the offline path.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

from pipeline.competition.kaggle_notebook import create_notebook
from pipeline.config.params import PARAMS_FILE
from pipeline.config.presets import add_set_argument, load_preset, preset_path
from pipeline.io.console import PipelineError, warn
from pipeline.io.files import write_json, write_text

COMMANDS = ("notebook", "push")
DEFAULT_DIR = Path("kaggle/kernel")
DEFAULT_PRESET = "classify-leaves-gpu"
METADATA_FILE = "kernel-metadata.json"
PROJECT = "leaf-pipeline"  # the folder under /kaggle/working the notebook runs in
KERNEL_URL = "https://www.kaggle.com/code/{id}"
SLUG = re.compile(r"^[a-z0-9][a-z0-9-]*$")
DATASET = re.compile(r"^[\w.-]+/[a-z0-9][a-z0-9-]*$", re.IGNORECASE)


def add_commands(commands: argparse._SubParsersAction, competition_default: str) -> None:
    """Register `notebook` and `push` on `leaf kaggle`'s subcommands."""
    notebook = commands.add_parser("notebook", help="write a Kaggle notebook that runs the DAG")
    push = commands.add_parser("push", help="push the notebook with kaggle kernels push")
    notebook.add_argument(
        "--competition", "-c", default=competition_default, help=f"(default: {competition_default})"
    )
    notebook.add_argument(
        "--user", help="your Kaggle user name (default: KAGGLE_USERNAME or kaggle.json's)"
    )
    notebook.add_argument("--slug", help="its URL name (default: leaf-pipeline-<competition>)")
    notebook.add_argument("--title", help="the kernel's title (default: the slug)")
    notebook.add_argument("--preset", default=DEFAULT_PRESET, help=f"(default: {DEFAULT_PRESET})")
    notebook.add_argument(
        "--source",
        choices=("repo", "wheel"),
        default="repo",
        help="install with pip from --repo, or offline from --wheel-dataset",
    )
    notebook.add_argument(
        "--repo", help="a pip requirement, e.g. git+https://github.com/U/R@COMMIT"
    )
    notebook.add_argument("--wheel-dataset", help="USER/DATASET holding the project's wheels")
    notebook.add_argument("--weights-dataset", help="USER/DATASET holding a HF_HOME of weights")
    for flag, what in (("--internet", "the session's internet"), ("--gpu", "a GPU session")):
        notebook.add_argument(
            flag, action=argparse.BooleanOptionalAction, default=True, help=f"{what} (default: on)"
        )
    add_set_argument(notebook)
    for sub in (notebook, push):
        sub.add_argument("--dir", type=Path, default=DEFAULT_DIR, help=f"(default: {DEFAULT_DIR})")


def kaggle_user(env: dict[str, str] | os._Environ = os.environ) -> str | None:
    """The Kaggle user name: KAGGLE_USERNAME, else the `username` of a kaggle.json."""
    if env.get("KAGGLE_USERNAME"):
        return env["KAGGLE_USERNAME"]
    folders = [Path(env["KAGGLE_CONFIG_DIR"])] if env.get("KAGGLE_CONFIG_DIR") else []
    for token in [folder / "kaggle.json" for folder in [*folders, Path.home() / ".kaggle"]]:
        try:
            return json.loads(token.read_text(encoding="utf-8")).get("username") or None
        except (OSError, ValueError, AttributeError):
            continue
    return None


def check_options(args: argparse.Namespace) -> None:
    """Refuse a combination of options the notebook could not run with."""
    if args.source == "repo" and not args.repo:
        raise PipelineError(
            "--source repo needs --repo (a pip requirement such as "
            "git+https://github.com/USER/REPO@COMMIT), or use --source wheel"
        )
    if args.source == "repo" and not args.internet:
        raise PipelineError(
            "--source repo installs with pip from the internet; with "
            "--no-internet use --source wheel --wheel-dataset USER/DATASET"
        )
    if args.source == "wheel" and not args.wheel_dataset:
        raise PipelineError("--source wheel needs --wheel-dataset USER/DATASET (docs/kaggle.md)")
    for option in ("wheel_dataset", "weights_dataset"):
        value = getattr(args, option)
        if value is not None and not DATASET.match(value):
            raise PipelineError(f"--{option.replace('_', '-')} {value!r}: expected USER/DATASET")
    if not SLUG.match(args.slug):
        raise PipelineError(f"--slug {args.slug!r}: use lowercase letters, digits and hyphens")


def metadata(args: argparse.Namespace, user: str) -> dict:
    """kernel-metadata.json for `kaggle kernels push`."""
    datasets = [d for d in (args.wheel_dataset, args.weights_dataset) if d]
    return {
        "id": f"{user}/{args.slug}",
        "title": args.title or args.slug,
        "code_file": f"{args.slug}.ipynb",
        "language": "python",
        "kernel_type": "notebook",
        "is_private": True,
        "enable_gpu": args.gpu,
        "enable_internet": args.internet,
        "dataset_sources": datasets,
        "competition_sources": [args.competition],
        "kernel_sources": [],
        "model_sources": [],
    }


def project_files(preset: str) -> dict[str, str]:
    """The files of this checkout the notebook writes beside the package: dvc.yaml, params.yaml
    and the preset, as presets/<name>.yaml."""
    path = preset_path(preset)
    files = {"dvc.yaml": Path("dvc.yaml"), "params.yaml": PARAMS_FILE}
    files[f"presets/{path.stem}.yaml"] = path
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        raise PipelineError(
            f"{', '.join(missing)}: not found; run leaf kaggle notebook from the project's checkout"
        )
    return {name: file.read_text(encoding="utf-8") for name, file in files.items()}


def wants_weights(preset: str, sets: list[str]) -> bool:
    """Whether the preset (with the -S keys) trains from pretrained weights by default."""
    pretrained = load_preset(preset).get("train", {}).get("defaults", {}).get("pretrained")
    for assignment in sets:
        key, _, value = assignment.partition("=")
        if key.strip() == "train.defaults.pretrained":
            pretrained = value.strip().lower() == "true"
    return bool(pretrained)


def write_kernel(args: argparse.Namespace) -> dict:
    """Write the notebook and kernel-metadata.json into args.dir; returns the metadata."""
    user = args.user or kaggle_user()
    if not user:
        raise PipelineError(
            "no Kaggle user name: pass --user, or set KAGGLE_USERNAME (or "
            "save your API token as ~/.kaggle/kaggle.json)"
        )
    args.slug = args.slug or f"leaf-pipeline-{args.competition}"
    check_options(args)
    meta = metadata(args, user)
    settings = {
        "competition": args.competition,
        "preset": preset_path(args.preset).stem,  # what project_files names it in the notebook
        "source": args.source,
        "repo": args.repo,
        "wheel": args.wheel_dataset,
        "weights": args.weights_dataset,
        "internet": args.internet,
        "overrides": args.sets,
        "project": PROJECT,
    }
    notebook = create_notebook(settings, project_files(args.preset))
    if not args.internet and not args.weights_dataset and wants_weights(args.preset, args.sets):
        warn(
            f"{args.preset} sets pretrained: true, but with --no-internet the notebook cannot "
            "download weights: attach them with --weights-dataset (docs/kaggle.md) or add "
            "-S train.defaults.pretrained=false"
        )
    args.dir.mkdir(parents=True, exist_ok=True)
    write_text(args.dir / meta["code_file"], notebook)
    write_json(args.dir / METADATA_FILE, meta)
    return meta


def call(kaggle: str, command: list[str]) -> tuple[int, str]:
    """Run `kaggle COMMAND`; (exit code, its output), the output also printed."""
    try:
        result = subprocess.run([kaggle, *command], capture_output=True, text=True)
    except OSError as err:
        raise PipelineError(f"cannot run kaggle: {err}") from None
    output = (result.stdout + result.stderr).strip()
    if output:
        print(output)
    return result.returncode, output


def push(folder: Path, executable: Callable[[], str]) -> tuple[str, str]:
    """Push `folder` with `kaggle kernels push`; returns (the kernel's URL, its status)."""
    try:
        kernel_id = json.loads((folder / METADATA_FILE).read_text(encoding="utf-8"))["id"]
    except (OSError, ValueError, KeyError, TypeError):
        raise PipelineError(
            f"{folder / METADATA_FILE}: missing or without an id; write it "
            "with leaf kaggle notebook --dir " + str(folder)
        ) from None
    kaggle = executable()
    code, output = call(kaggle, ["kernels", "push", "-p", str(folder)])
    # kaggle kernels push reports some refusals ("Kernel push error: ...") with exit code 0
    if code != 0 or "error" in output.lower():
        raise PipelineError(
            f"`kaggle kernels push -p {folder}` failed (exit code {code}; its "
            f"output is above). Check {METADATA_FILE}'s id ({kernel_id}: your "
            "user name), its dataset and competition sources, and your "
            "credentials"
        )
    code, status = call(kaggle, ["kernels", "status", kernel_id])
    return KERNEL_URL.format(id=kernel_id), status if code == 0 else f"unknown (exit code {code})"


def run(args: argparse.Namespace, executable: Callable[[], str]) -> None:
    """`leaf kaggle notebook` or `leaf kaggle push`; `executable` finds the kaggle command."""
    if args.command == "notebook":
        meta = write_kernel(args)
        print(
            f"kaggle: wrote {args.dir / meta['code_file']} and {args.dir / METADATA_FILE} "
            f"({meta['id']}); push it with leaf kaggle push --dir {args.dir}"
        )
    else:
        url, status = push(args.dir, executable)
        print(f"kaggle: pushed {url}\nstatus: {status}")
