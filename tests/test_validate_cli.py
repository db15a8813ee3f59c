"""`python -m pipeline.validate` on the command line: the summary line, exit code 2 with one
`error:` paragraph for a bad file or argument, never a traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers.processes import run_python
from helpers.projects import write_prepared_project
from helpers.submissions import CLASSES, TEST, VALID_CSV

from pipeline.io.console import run
from pipeline.tools import validate

# ----------------------------------------------------------------------------------------------
# The command line


@pytest.fixture
def prepared_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project folder (the cwd) with params.yaml and prepared test.csv and classes.json."""
    monkeypatch.chdir(tmp_path)
    write_prepared_project(tmp_path, CLASSES, TEST)
    (tmp_path / "sub.csv").write_text(VALID_CSV, encoding="utf-8")
    return tmp_path


def cli(argv: list[str], monkeypatch) -> int:
    """Run `python -m pipeline.validate ARGV` in-process; return its exit code."""
    monkeypatch.setattr(sys, "argv", ["validate", *argv])
    try:
        run(validate.main)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    return 0


def test_cli_ok_prints_one_summary_line(prepared_project, monkeypatch, capsys):
    assert cli(["sub.csv"], monkeypatch) == 0
    out = capsys.readouterr().out
    assert out == "OK: sub.csv: 3 rows, 2 distinct labels (3 classes)\n"


def test_cli_bad_submission_exits_2_listing_problems(prepared_project, monkeypatch, capsys):
    (prepared_project / "sub.csv").write_text(VALID_CSV.replace("quercus", "NA"), encoding="utf-8")
    assert cli(["sub.csv"], monkeypatch) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: sub.csv: 1 problem(s):\n")
    assert "row 3: label 'NA' is not a training class" in err


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["nothing.csv"], "nothing.csv: submission not found"),
        (["sub.csv", "--classes", "nothing.json"], "nothing.json: class list not found"),
        (["sub.csv", "--test-csv", "nothing.csv"], "nothing.csv: file not found"),
        (["sub.csv", "--train-csv", "nothing.csv"], "nothing.csv: file not found"),
        (["sub.csv", "--train-csv", "data"], "data: a folder, not a file"),
    ],
)
def test_cli_missing_files_are_named(prepared_project, monkeypatch, capsys, argv, expected):
    assert cli(argv, monkeypatch) == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err


def test_cli_without_prepared_data_says_what_to_do(prepared_project, monkeypatch, capsys):
    (prepared_project / "data/prepared/test.csv").unlink()
    assert cli(["sub.csv"], monkeypatch) == 2
    assert "run `dvc repro prepare` first, or pass --test-csv" in capsys.readouterr().err


@pytest.mark.parametrize("content", ['{"acer": 1}', "[]", "not json", "[1, 2]"])
def test_cli_bad_class_list(prepared_project, monkeypatch, capsys, content):
    (prepared_project / "classes.json").write_text(content, encoding="utf-8")
    assert cli(["sub.csv", "--classes", "classes.json"], monkeypatch) == 2
    assert "classes.json: " in capsys.readouterr().err


def test_cli_against_raw_competition_files(prepared_project, monkeypatch, capsys):
    # No pipeline run needed: test.csv and train.csv as Kaggle ships them (BOM, padding).
    (prepared_project / "data/prepared/test.csv").unlink()
    (prepared_project / "data/prepared/classes.json").unlink()
    (prepared_project / "test.csv").write_text(
        "\ufeffimage\n" + "".join(f" {i} \n" for i in TEST), encoding="utf-8"
    )
    labels = ["quercus", "acer", "betula", "acer"]
    (prepared_project / "train.csv").write_text(
        "image,label\n" + "".join(f"images/{i}x.jpg,{c}\n" for i, c in enumerate(labels)),
        encoding="utf-8",
    )
    argv = ["sub.csv", "--test-csv", "test.csv", "--train-csv", "train.csv"]
    assert cli(argv, monkeypatch) == 0
    assert capsys.readouterr().out.startswith("OK: sub.csv: 3 rows")
    (prepared_project / "classes.json").write_text(json.dumps(["acer"]), encoding="utf-8")
    assert cli(["sub.csv", "--test-csv", "test.csv", "--classes", "classes.json"], monkeypatch) == 2
    assert "row 3: label 'quercus' is not a training class" in capsys.readouterr().err


def test_cli_header_follows_params(prepared_project, monkeypatch, capsys):
    params = {"data": {"image_col": "id"}, "train": {"models": {"d2l_resnet11": {}}}}
    (prepared_project / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    assert cli(["sub.csv"], monkeypatch) == 2
    assert "header is ['image', 'label'], expected ['id', 'label']" in capsys.readouterr().err


def test_cli_header_is_submission_columns_and_the_tables_keep_theirs(
    prepared_project, monkeypatch, capsys
):
    data = {"image_col": "file", "submission_columns": ["id", "category"]}
    params = {"data": data, "train": {"models": {"d2l_resnet11": {}}}}
    (prepared_project / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    assert cli(["sub.csv"], monkeypatch) == 2
    assert "header is ['image', 'label'], expected ['id', 'category']" in capsys.readouterr().err
    sub = (prepared_project / "sub.csv").read_text(encoding="utf-8")
    (prepared_project / "sub.csv").write_text("id,category" + sub[len("image,label") :])
    (prepared_project / "test.csv").write_text(
        "file\n" + "".join(line.split(",")[0] + "\n" for line in sub.splitlines()[1:])
    )
    argv = ["sub.csv", "--test-csv", "test.csv", "--classes", "data/prepared/classes.json"]
    assert cli(argv, monkeypatch) == 0, capsys.readouterr().err
    assert capsys.readouterr().out.startswith("OK: sub.csv: 3 rows")


def test_cli_classes_and_train_csv_are_exclusive(prepared_project, monkeypatch, capsys):
    assert cli(["sub.csv", "--classes", "a", "--train-csv", "b"], monkeypatch) == 2
    assert "not allowed with argument" in capsys.readouterr().err


def test_cli_as_a_subprocess_has_no_traceback(prepared_project):
    (prepared_project / "bad.csv").write_bytes(
        "image,label\nimages/5.jpg,\xe9rable\n".encode("latin-1")
    )

    def validate(name: str) -> subprocess.CompletedProcess:
        return run_python(["-m", "pipeline.tools.validate", name], prepared_project, timeout=180)

    ok = validate("sub.csv")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("OK: sub.csv: 3 rows")
    bad = validate("bad.csv")
    assert bad.returncode == 2
    assert "error: bad.csv: not UTF-8 text (line 2: byte 0xe9)" in bad.stderr
    assert "Traceback" not in bad.stderr
