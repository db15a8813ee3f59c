"""The Kaggle notebook that runs the pipeline on a competition (`leaf kaggle notebook`).

Its cells, top to bottom: settings and helpers (the Kaggle root is $LEAF_KAGGLE_ROOT, default
/kaggle), the project's install (skipped when LEAF_KAGGLE_SKIP_INSTALL is set and the package is
importable), the checkout's dvc.yaml, params.yaml and preset, the installed package copied in
beside them, the preset applied with data.root at the competition's input folder, `dvc repro
submit`, and submission.csv copied to /kaggle/working and validated.
"""

from __future__ import annotations

from textwrap import dedent
from typing import Any

from pipeline.io.console import PipelineError

SETUP = '''\
import os, shutil, subprocess, sys
from pathlib import Path

COMPETITION = {competition!r}
PRESET = {preset!r}
SOURCE = {source!r}  # repo: pip install REPO; wheel: offline, from WHEEL_DATASET's wheels
REPO = {repo!r}
WHEEL_DATASET = {wheel!r}
WEIGHTS_DATASET = {weights!r}
INTERNET = {internet!r}
OVERRIDES = {overrides!r}  # more -S KEY=VALUE over the preset

KAGGLE_ROOT = Path(os.environ.get("LEAF_KAGGLE_ROOT", "/kaggle"))
INPUT, WORKING = KAGGLE_ROOT / "input", KAGGLE_ROOT / "working"
PROJECT = WORKING / {project!r}
PROJECT.mkdir(parents=True, exist_ok=True)
os.environ["DVC_NO_ANALYTICS"] = "1"


def sh(*command, cwd=PROJECT):
    """Run a command, its output in the notebook; a failure stops the notebook."""
    command = [str(part) for part in command]
    print("$", " ".join(command), flush=True)
    subprocess.run(command, cwd=cwd, check=True)


def dataset(name):
    """Where Kaggle mounts an attached dataset (USER/NAME) or competition."""
    slug = name.split("/")[-1]
    for folder in (INPUT / slug, INPUT / "datasets" / name, INPUT / "competitions" / slug):
        if folder.is_dir():
            return folder
    raise FileNotFoundError(f"{{name}} is not attached: no {{INPUT / slug}}")
'''

INSTALL = """\
import importlib, importlib.util

if os.environ.get("LEAF_KAGGLE_SKIP_INSTALL") and importlib.util.find_spec("pipeline.stages"):
    print("the project is already importable: no pip install")
elif SOURCE == "wheel":
    wheels = sorted({{str(p.parent) for p in dataset(WHEEL_DATASET).rglob("*.whl")}})
    links = [arg for folder in wheels for arg in ("--find-links", folder)]
    sh(sys.executable, "-m", "pip", "install", "--no-index", *links, "leaf-pipeline", cwd=WORKING)
else:
    sh(sys.executable, "-m", "pip", "install", REPO, cwd=WORKING)
importlib.invalidate_caches()
"""

COPY = """\
import pipeline

# The stages run as `python3 -m pipeline.stages.X` from PROJECT, and dvc.yaml's deps name
# pipeline/*.py there: the installed package is copied in beside the files written below.
shutil.copytree(Path(pipeline.__file__).parent, PROJECT / "pipeline", dirs_exist_ok=True,
                ignore=shutil.ignore_patterns("__pycache__"))
for name, text in PROJECT_FILES.items():
    (PROJECT / name).parent.mkdir(parents=True, exist_ok=True)
    (PROJECT / name).write_text(text, encoding="utf-8")
if not (PROJECT / ".dvc").is_dir():
    sh(sys.executable, "-m", "dvc", "init", "--no-scm", "-q")
"""

CONFIGURE = """\
if WEIGHTS_DATASET:  # timm/torchvision weights: a writable copy of the attached HF_HOME
    cache = WORKING / "weights"
    shutil.copytree(dataset(WEIGHTS_DATASET), cache, dirs_exist_ok=True)
    os.environ.update(HF_HOME=str(cache), TORCH_HOME=str(cache / "torch"))
if not INTERNET:
    os.environ["HF_HUB_OFFLINE"] = "1"
DATA_ROOT = dataset(COMPETITION)
sets = [f"data.root={{DATA_ROOT}}", *OVERRIDES]
sh(sys.executable, "-m", "pipeline.tools.presets", PRESET, "--write",
   *[arg for key in sets for arg in ("-S", key)])
"""

RUN = """\
import torch

print("GPU:", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none, on the CPU")
sh(sys.executable, "-m", "dvc", "repro", "submit")
"""

SUBMIT = """\
for name in ("submission.csv", "submission.json"):
    shutil.copy(PROJECT / "submissions" / name, WORKING / name)
sh(sys.executable, "-m", "pipeline.tools.validate", WORKING / "submission.csv",
   "--test-csv", DATA_ROOT / "test.csv", "--train-csv", DATA_ROOT / "train.csv")
"""


def file_cell(name: str, text: str) -> str:
    """A cell that puts `text` in PROJECT_FILES[name], as a readable triple-quoted string."""
    if '"""' in text or "\\" in text:
        return f"PROJECT_FILES[{name!r}] = {text!r}"
    return f'PROJECT_FILES[{name!r}] = """\\\n{text}"""'


def create_notebook(settings: dict[str, Any], files: dict[str, str]) -> str:
    """The notebook: setup, install, project files, preset, `dvc repro submit`, submission."""
    try:
        import nbformat
        from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook
    except ImportError:
        raise PipelineError(
            "leaf kaggle notebook needs nbformat: pip install nbformat "
            "(or the project's extra: pip install -e '.[kaggle]')"
        ) from None

    intro = dedent(f"""\
        # Leaf pipeline on {settings["competition"]}
        Written by `leaf kaggle notebook`: installs the project, applies the preset
        `{settings["preset"]}` with `data.root` at the competition's input folder, runs `dvc repro
        submit` (on the GPU when the session has one) and leaves `submission.csv` in
        `/kaggle/working`.""")
    cells = [
        new_markdown_cell(intro),
        new_code_cell(SETUP.format(**settings)),
        new_code_cell(INSTALL.format()),
        new_code_cell("PROJECT_FILES = {}  # written into PROJECT by the cell after them"),
        *[new_code_cell(file_cell(name, text)) for name, text in files.items()],
        new_code_cell(COPY),
        new_code_cell(CONFIGURE.format()),
        new_code_cell(RUN),
        new_code_cell(SUBMIT),
    ]
    notebook = new_notebook(cells=cells)
    notebook.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nbformat.validate(notebook)
    return nbformat.writes(notebook)
