"""`leaf kaggle notebook` and `leaf kaggle push` (pipeline/tools/kernel.py): the notebook run
top to bottom against a fake /kaggle, the push against a fake `kaggle` on PATH."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest
from conftest import TINY_OVERRIDES
from helpers.processes import python_path
from helpers.projects import install_fake_kaggle
from nbclient import NotebookClient

from pipeline.config.presets import flow
from pipeline.config.schema import GenerateParams
from pipeline.data.synthetic import generate_dataset
from pipeline.io.console import PipelineError
from pipeline.tools import kaggle, validate

SLUG = "leaf-pipeline-classify-leaves"

# Records its arguments; `kernels status` answers as the real CLI does.
FAKE_KAGGLE = """#!{python}
import json, os, sys
from pathlib import Path

log = Path(os.environ["FAKE_KAGGLE_LOG"])
calls = json.loads(log.read_text()) if log.exists() else []
log.write_text(json.dumps(calls + [sys.argv[1:]]))
if sys.argv[1:3] == ["kernels", "status"]:
    print(f'{{sys.argv[3]}} has status "KernelWorkerStatus.RUNNING"')
else:
    print(os.environ.get("FAKE_KAGGLE_OUTPUT", "Kernel version 1 successfully pushed."))
sys.exit(int(os.environ.get("FAKE_KAGGLE_EXIT", "0")))
"""


@pytest.fixture
def fake_kaggle(tmp_path, monkeypatch) -> Path:
    """A fake `kaggle` first on PATH and credentials in the environment; returns its log."""
    log = install_fake_kaggle(tmp_path, monkeypatch, FAKE_KAGGLE)
    return log


def calls(log: Path) -> list[list[str]]:
    return json.loads(log.read_text()) if log.exists() else []


def write(folder: Path, *options: str) -> tuple[dict, nbformat.NotebookNode]:
    kaggle.main(["notebook", "--dir", str(folder), *options])
    meta = json.loads((folder / "kernel-metadata.json").read_text())
    return meta, nbformat.read(folder / meta["code_file"], as_version=4)


def test_offline_notebook_attaches_the_wheels_and_weights(fake_kaggle, tmp_path):
    options = ["--source", "wheel", "--wheel-dataset", "leaf/leaf-wheels", "--no-internet"]
    meta, nb = write(tmp_path / "k", *options, "--weights-dataset", "leaf/timm-weights")
    assert meta == {
        "id": f"leaf/{SLUG}",
        "title": SLUG,
        "code_file": f"{SLUG}.ipynb",
        "language": "python",
        "kernel_type": "notebook",
        "is_private": True,
        "enable_gpu": True,
        "enable_internet": False,
        "dataset_sources": ["leaf/leaf-wheels", "leaf/timm-weights"],
        "competition_sources": ["classify-leaves"],
        "kernel_sources": [],
        "model_sources": [],
    }
    code = "\n".join(cell.source for cell in nb.cells)
    assert "SOURCE = 'wheel'" in code and "--no-index" in code
    assert "PROJECT_FILES['presets/classify-leaves-gpu.yaml']" in code
    assert all(not cell.get("outputs") for cell in nb.cells)


def test_a_preset_given_as_a_path_is_applied_by_its_name(fake_kaggle, tmp_path):
    preset = tmp_path / "configs" / "mine.yaml"
    preset.parent.mkdir()
    preset.write_text("train: {defaults: {epochs: 3}}\n", encoding="utf-8")
    _, nb = write(tmp_path / "k", "--repo", "x", "--preset", str(preset))
    code = "\n".join(cell.source for cell in nb.cells)
    assert "PROJECT_FILES['presets/mine.yaml']" in code and "PRESET = 'mine'" in code


def test_user_slug_gpu_and_competition_options(fake_kaggle, tmp_path):
    options = ["--user", "me", "--slug", "try-1", "--no-gpu", "-c", "other", "--repo", "x"]
    meta, _ = write(tmp_path / "k", *options)
    assert (meta["id"], meta["code_file"]) == ("me/try-1", "try-1.ipynb")
    assert (meta["enable_gpu"], meta["enable_internet"]) == (False, True)
    assert meta["competition_sources"] == ["other"]


def test_no_internet_without_weights_warns(fake_kaggle, tmp_path, capsys):
    write(tmp_path / "k", "--source", "wheel", "--wheel-dataset", "leaf/w", "--no-internet")
    assert "cannot download weights" in capsys.readouterr().err


@pytest.mark.parametrize(
    "options, expected",
    [
        ([], "--source repo needs --repo"),
        (["--repo", "x", "--no-internet"], "with --no-internet use --source wheel"),
        (["--source", "wheel"], "needs --wheel-dataset"),
        (["--source", "wheel", "--wheel-dataset", "wheels"], "expected USER/DATASET"),
        (["--repo", "x", "--slug", "Not A Slug"], "lowercase letters"),
        (["--repo", "x", "--preset", "nope"], "preset 'nope' not found"),
    ],
)
def test_bad_options_are_refused(fake_kaggle, tmp_path, options, expected):
    with pytest.raises(PipelineError, match=expected):
        kaggle.main(["notebook", "--dir", str(tmp_path / "k"), *options])
    assert not (tmp_path / "k").exists()


def test_notebook_needs_a_user_name(fake_kaggle, tmp_path, monkeypatch):
    monkeypatch.delenv("KAGGLE_USERNAME")
    with pytest.raises(PipelineError, match="no Kaggle user name"):
        kaggle.main(["notebook", "--dir", str(tmp_path / "k"), "--repo", "x"])
    (tmp_path / "home" / ".kaggle").mkdir()
    (tmp_path / "home" / ".kaggle" / "kaggle.json").write_text('{"username": "json-user"}')
    meta, _ = write(tmp_path / "k", "--repo", "x")
    assert meta["id"] == f"json-user/{SLUG}"


def test_push_reports_the_url_and_status(fake_kaggle, tmp_path, capsys):
    folder = tmp_path / "k"
    write(folder, "--repo", "x")
    kaggle.main(["push", "--dir", str(folder)])
    assert calls(fake_kaggle) == [
        ["kernels", "push", "-p", str(folder)],
        ["kernels", "status", f"leaf/{SLUG}"],
    ]
    out = capsys.readouterr().out
    assert f"kaggle: pushed https://www.kaggle.com/code/leaf/{SLUG}" in out
    assert 'status: leaf/leaf-pipeline-classify-leaves has status "KernelWorkerStatus.RUNNING"' in (
        out
    )


@pytest.mark.parametrize(
    "env, expected",
    [
        ({"FAKE_KAGGLE_EXIT": "1"}, "exit code 1"),
        ({"FAKE_KAGGLE_OUTPUT": "Kernel push error: Notebook not found"}, "exit code 0"),
    ],
    ids=["exit code", "error printed"],
)
def test_a_failed_push_is_one_error(fake_kaggle, tmp_path, monkeypatch, env, expected):
    folder = tmp_path / "k"
    write(folder, "--repo", "x")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(PipelineError, match=f"kaggle kernels push -p .* failed \\({expected}"):
        kaggle.main(["push", "--dir", str(folder)])
    assert len(calls(fake_kaggle)) == 1  # no status after a failed push


def test_push_needs_the_folder_the_cli_and_credentials(fake_kaggle, tmp_path, monkeypatch):
    folder = tmp_path / "k"
    with pytest.raises(PipelineError, match="kernel-metadata.json: missing"):
        kaggle.main(["push", "--dir", str(folder)])
    write(folder, "--repo", "x")
    monkeypatch.delenv("KAGGLE_KEY")
    with pytest.raises(PipelineError, match="no Kaggle credentials"):
        kaggle.main(["push", "--dir", str(folder)])
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(PipelineError, match="kaggle command is not installed"):
        kaggle.main(["push", "--dir", str(folder)])
    assert calls(fake_kaggle) == []


def dotted(tree: dict, prefix: str = "") -> list[str]:
    """`-S key=value` for each leaf of `tree` (train.models whole, as the preset tool expects)."""
    sets = []
    for key, value in tree.items():
        if isinstance(value, dict) and key != "models":
            sets += dotted(value, f"{prefix}{key}.")
        else:
            sets.append(f"{prefix}{key}={flow(value)}")
    return sets


@pytest.mark.slow
def test_notebook_runs_on_a_fake_kaggle(fake_kaggle, tmp_path, monkeypatch):
    kaggle_root = tmp_path / "kaggle"
    competition = kaggle_root / "input" / "classify-leaves"
    generate_dataset(competition, GenerateParams(**TINY_OVERRIDES["generate"]))
    (kaggle_root / "working").mkdir()
    tiny = {key: TINY_OVERRIDES[key] for key in ("base", "split", "train")}
    tiny["train"] = {**tiny["train"], "device": "auto"}  # the notebook's fallback to the CPU
    sets = [*dotted(tiny), "train.defaults.pretrained=false"]
    _, nb = write(tmp_path / "k", "--repo", "unused", *[arg for s in sets for arg in ("-S", s)])

    monkeypatch.setenv("LEAF_KAGGLE_ROOT", str(kaggle_root))
    monkeypatch.setenv("LEAF_KAGGLE_SKIP_INSTALL", "1")
    monkeypatch.setenv("PYTHONPATH", python_path())
    working = kaggle_root / "working"
    client = NotebookClient(
        nb, kernel_name="python3", timeout=900, resources={"metadata": {"path": str(working)}}
    )
    client.execute()  # raises CellExecutionError on the first failing cell

    text = "\n".join(out.get("text", "") for cell in nb.cells for out in cell.get("outputs", []))
    assert "no pip install" in text and "dvc repro submit" in text
    submission = working / "submission.csv"
    checked = validate.main(
        [
            str(submission),
            "--test-csv",
            str(competition / "test.csv"),
            "--train-csv",
            str(competition / "train.csv"),
        ]
    )
    assert len(checked) == len((competition / "test.csv").read_text().splitlines()) - 1
    record = json.loads((working / "submission.json").read_text())
    assert record["data"]["root"] == str(competition)
