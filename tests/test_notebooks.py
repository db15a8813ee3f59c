"""The notebooks run top to bottom: exploration on a tiny prepared dataset built here, error
analysis on the tiny finished run and on a run without a single mistake."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest
from helpers.processes import REPO_ROOT, python_path
from nbclient import NotebookClient
from PIL import Image

NOTEBOOK = REPO_ROOT / "notebooks" / "explore.ipynb"
ERRORS_NOTEBOOK = REPO_ROOT / "notebooks" / "errors.ipynb"
CLASSES = ["Acer_Mono", "Betula_Pendula", "Quercus_Rubra"]
PER_CLASS = 5
TEST_IMAGES = 4


def write_prepared(
    root: Path,
    classes: list[str] = CLASSES,
    per_class: int = PER_CLASS,
    test_images: int = TEST_IMAGES,
) -> int:
    """A minimal project at `root`: params.yaml and data/prepared as stage `prepare` writes it.

    Images vary in size and mode (L and RGB) like a real competition folder. Returns the number
    of train images.
    """
    (root / "params.yaml").write_text("{}\n", encoding="utf-8")
    images = root / "images"
    images.mkdir()
    prepared = root / "data" / "prepared"
    prepared.mkdir(parents=True)

    def make(name: str, index: int) -> str:
        size = (40 + 8 * (index % 4), 48 + 6 * (index % 3))
        mode = "L" if index % 2 else "RGB"
        Image.new(mode, size, 30 + 20 * (index % 10)).save(images / name, "JPEG")
        return f"images/{name}"

    train_rows, index = [], 0
    for target, label in enumerate(classes):
        for _ in range(per_class):
            path = make(f"{index}.jpg", index)
            train_rows.append(f"{path},{label},{target},{path},{index:032x}")
            index += 1
    test_rows = []
    for _ in range(test_images):
        path = make(f"{index}.jpg", index)
        test_rows.append(f"{path},{path},{index:032x}")
        index += 1

    (prepared / "classes.json").write_text(json.dumps(sorted(classes), indent=2), encoding="utf-8")
    (prepared / "train.csv").write_text(
        "\n".join(["image,label,target,path,md5", *train_rows]) + "\n", encoding="utf-8"
    )
    (prepared / "test.csv").write_text(
        "\n".join(["image,path,md5", *test_rows]) + "\n", encoding="utf-8"
    )
    return len(train_rows)


def _texts(nb: nbformat.NotebookNode) -> str:
    parts = []
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            parts.append(output.get("text", ""))
            parts.append(output.get("data", {}).get("text/plain", ""))
    return "\n".join(parts)


def _figures(nb: nbformat.NotebookNode) -> int:
    return sum(
        "image/png" in out.get("data", {}) for cell in nb.cells for out in cell.get("outputs", [])
    )


def execute(notebook: Path, root: Path, monkeypatch) -> nbformat.NotebookNode:
    """Run `notebook` on the project at `root`; fail on the first cell that raises."""
    # The kernel inherits this process's environment.
    monkeypatch.setenv("LEAF_PROJECT_ROOT", str(root))
    monkeypatch.setenv("PYTHONPATH", python_path())
    monkeypatch.delenv("MPLBACKEND", raising=False)  # keep the inline backend

    nb = nbformat.read(notebook, as_version=4)
    client = NotebookClient(
        nb, kernel_name="python3", timeout=300, resources={"metadata": {"path": str(root)}}
    )
    client.execute()  # raises CellExecutionError on the first failing cell
    errors = [
        out
        for cell in nb.cells
        for out in cell.get("outputs", [])
        if out.get("output_type") == "error"
    ]
    assert not errors
    return nb


@pytest.mark.parametrize("notebook", [NOTEBOOK, ERRORS_NOTEBOOK], ids=lambda p: p.name)
def test_committed_notebook_has_no_outputs(notebook):
    nb = nbformat.read(notebook, as_version=4)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert code
    assert all(not cell.outputs and cell.execution_count is None for cell in code)


def test_explore_notebook_runs(tmp_path, monkeypatch):
    n_train = write_prepared(tmp_path)
    nb = execute(NOTEBOOK, tmp_path, monkeypatch)
    text = _texts(nb)
    assert f"train images: {n_train}" in text
    assert f"classes: {len(CLASSES)}" in text
    assert f"test images: {TEST_IMAGES}" in text
    assert "'L'" in text and "'RGB'" in text  # both modes reported
    assert _figures(nb) >= 3  # class counts, sample grid, sizes


def test_errors_notebook_runs_on_a_finished_run(finished_run, monkeypatch):
    folds = pd.read_csv(finished_run / "data" / "folds.csv")
    oof = np.load(finished_run / "data" / "ensemble" / "oof_logits.npy")
    wrong = int((oof.argmax(axis=1) != folds["target"].to_numpy()).sum())

    nb = execute(ERRORS_NOTEBOOK, finished_run, monkeypatch)  # reads only
    text = _texts(nb)
    assert f"OOF images scored: {len(folds)} of {len(folds)}" in text
    assert f"misclassified: {wrong}" in text
    assert _figures(nb) == 2 + (wrong > 0)  # confusion matrix, accuracy bars, mistakes grid


def test_errors_notebook_copes_with_two_classes_and_no_mistakes(tmp_path, monkeypatch):
    classes = ["Acer_Mono", "Betula_Pendula"]
    n_train = write_prepared(tmp_path, classes=classes, per_class=4, test_images=1)
    folds = pd.read_csv(tmp_path / "data" / "prepared" / "train.csv")
    folds["fold"] = np.arange(n_train) % 2
    folds.to_csv(tmp_path / "data" / "folds.csv", index=False)
    oof = np.full((n_train, 2), np.nan, dtype=np.float32)  # fold 1 not trained
    trained = np.flatnonzero(folds["fold"] == 0)
    oof[trained] = np.eye(2, dtype=np.float32)[folds["target"][trained]] * 5
    (tmp_path / "data" / "ensemble").mkdir()
    np.save(tmp_path / "data" / "ensemble" / "oof_logits.npy", oof)

    text = _texts(execute(ERRORS_NOTEBOOK, tmp_path, monkeypatch))
    assert f"OOF images scored: {len(trained)} of {n_train} (folds 0)" in text
    assert "OOF accuracy: 1.0000" in text
    assert "no confused pairs" in text and "no misclassified images" in text
