"""`python -m pipeline.validate`: every problem of a submission file is named by row, and a bad
file ends in one `error:` paragraph (exit code 2), never a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from helpers.projects import write_prepared_project

from pipeline.competition.submission import (
    SubmissionError,
    check_submission,
    read_submission,
    submission_problems,
)
from pipeline.io.console import format_problems, run
from pipeline.tools import validate

REPO_ROOT = Path(__file__).resolve().parents[1]
CLASSES = ["acer", "betula", "quercus"]
COLUMNS = ["image", "label"]
TEST = pd.Series(["images/5.jpg", "images/2.jpg", "images/9.jpg"])
VALID_CSV = "image,label\nimages/5.jpg,acer\nimages/2.jpg,quercus\nimages/9.jpg,acer\n"


def valid() -> pd.DataFrame:
    return pd.DataFrame({"image": TEST, "label": ["acer", "quercus", "acer"]})


def problems_of(text: str, tmp_path: Path, encoding: str = "utf-8") -> list[str]:
    path = tmp_path / "submission.csv"
    path.write_bytes(text.encode(encoding))
    return submission_problems(read_submission(path), TEST, CLASSES, COLUMNS)


# ----------------------------------------------------------------------------------------------
# submission_problems on frames


def test_valid_submission_has_no_problems():
    assert submission_problems(valid(), TEST, CLASSES, COLUMNS) == []


@pytest.mark.parametrize(
    ("corrupt", "expected"),
    [
        (lambda s: s.rename(columns={"label": "species"}), "header is ['image', 'species']"),
        (lambda s: s.assign(extra="x"), "header is ['image', 'label', 'extra']"),
        (lambda s: s.iloc[:2], "2 rows, test.csv has 3"),
        (lambda s: s.iloc[:2], "1 test.csv image(s) missing, first 'images/9.jpg'"),
        (
            lambda s: s.iloc[[1, 0, 2]].reset_index(drop=True),
            "2 rows differ from test.csv's order, first at row 2: 'images/2.jpg' instead of "
            "'images/5.jpg'",
        ),
        (lambda s: s.assign(label=["acer", "", "acer"]), "row 3: empty 'label'"),
        (lambda s: s.assign(label=["acer", "  ", "acer"]), "row 3: empty 'label'"),
        (lambda s: s.assign(label=["acer", None, "acer"]), "row 3: empty 'label'"),
        (lambda s: s.assign(image=["images/5.jpg", "", "images/9.jpg"]), "row 3: empty 'image'"),
        (
            lambda s: s.assign(label=["acer", "pinus", "acer"]),
            "row 3: label 'pinus' is not a training class",
        ),
        (
            lambda s: s.assign(label=["acer", "NaN", "acer"]),
            "row 3: label 'NaN' is not a training class",
        ),
        (
            lambda s: s.assign(label=["acer", "betula ", "acer"]),
            "row 3: label 'betula ' is not a training class (it has surrounding whitespace)",
        ),
        (
            lambda s: s.assign(image=["images/5.jpg", "images/5.jpg", "images/9.jpg"]),
            "row 3: image 'images/5.jpg' repeats row 2",
        ),
        (
            lambda s: s.assign(image=["images/5.jpg", "images/7.jpg", "images/9.jpg"]),
            "row 3: image 'images/7.jpg' is not in test.csv",
        ),
        (
            lambda s: s.assign(image=["images/5.jpg", " images/2.jpg", "images/9.jpg"]),
            "is not in test.csv (it has surrounding whitespace)",
        ),
    ],
)
def test_each_problem_is_reported(corrupt, expected):
    problems = submission_problems(corrupt(valid()), TEST, CLASSES, COLUMNS)
    assert any(expected in p for p in problems), problems


def test_order_is_reported_once_not_per_row():
    shuffled = valid().iloc[[2, 0, 1]].reset_index(drop=True)
    problems = submission_problems(shuffled, TEST, CLASSES, COLUMNS)
    assert len(problems) == 1 and "3 rows differ from test.csv's order" in problems[0]


def test_format_problems_shows_the_first_ten_and_counts_the_rest():
    text = format_problems([f"problem {i}" for i in range(25)])
    assert text.splitlines()[:2] == ["  - problem 0", "  - problem 1"]
    assert "problem 9" in text and "problem 10" not in text
    assert text.splitlines()[-1] == "  ... and 15 more"
    assert format_problems(["only"]) == "  - only"


# ----------------------------------------------------------------------------------------------
# Reading files


def test_file_read_as_text_keeps_na_like_labels(tmp_path):
    text = "image,label\nimages/5.jpg,NA\nimages/2.jpg,null\nimages/9.jpg,nan\n"
    problems = problems_of(text, tmp_path)
    assert [p.split(":")[0] for p in problems] == ["row 2", "row 3", "row 4"]
    assert "label 'NA' is not a training class" in problems[0]


def test_truly_empty_cells_are_empty(tmp_path):
    text = "image,label\nimages/5.jpg,\nimages/2.jpg\nimages/9.jpg,acer\n"
    assert problems_of(text, tmp_path) == ["rows 2, 3: empty 'label'"]


def test_repeated_label_problems_are_grouped_by_value(tmp_path):
    rows = [("images/5.jpg", "NA"), ("images/2.jpg", ""), ("images/9.jpg", "NA")]
    test = pd.Series([image for image, _ in rows] + [f"images/{i}x.jpg" for i in range(4)])
    rows += [(image, "NA") for image in test[3:]]
    frame = pd.DataFrame(rows, columns=COLUMNS)
    assert submission_problems(frame, test, CLASSES, COLUMNS) == [
        "rows 2, 4, 5 and 3 more: label 'NA' is not a training class",
        "row 3: empty 'label'",
    ]


def test_bom_and_blank_lines_are_ignored_and_rows_keep_their_line_numbers(tmp_path):
    text = "\ufeffimage,label\nimages/5.jpg,acer\n\nimages/2.jpg,pinus\nimages/9.jpg,acer\n\n"
    assert problems_of(text, tmp_path) == ["row 4: label 'pinus' is not a training class"]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "submission not found"),
        (b"", "not a readable CSV (No columns to parse from file)"),
        (
            "image,label\nimages/5.jpg,\xe9rable\n".encode("latin-1"),
            "not UTF-8 text (line 2: byte 0xe9)",
        ),
        ("image,label\n".encode("utf-16"), "not UTF-8 text (line 1: byte 0xff)"),
        (b'image,label\n"images/5.jpg,acer\n', "not a readable CSV"),
        (b"image,label\nimages/5.jpg,acer\nimages/2.jpg,acer,x\n", "Expected 2 fields in line 3"),
        (b"image,label\nimages/5.jpg,acer,x\n", "row 2 has more cells than the header"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00", "not UTF-8 text"),
    ],
    ids=[
        "missing",
        "empty",
        "latin1",
        "utf16",
        "open_quote",
        "extra_cell",
        "extra_cell_row2",
        "png",
    ],
)
def test_unreadable_files_are_refused_with_a_message(tmp_path, content, expected):
    path = tmp_path / "submission.csv"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(SubmissionError) as info:
        read_submission(path)
    assert str(path) in str(info.value)
    assert expected in str(info.value)


def test_encoding_error_deep_in_a_big_file_names_its_line(tmp_path):
    # pandas decodes in chunks and reports offsets within a chunk: the line must still be right.
    path = tmp_path / "submission.csv"
    rows = b"images/1.jpg,acer\n" * 100_000
    path.write_bytes(b"image,label\n" + rows + "images/2.jpg,\xe9rable\n".encode("latin-1"))
    with pytest.raises(SubmissionError, match=r"not UTF-8 text \(line 100002: byte 0xe9\)"):
        read_submission(path)


def test_directory_is_refused(tmp_path):
    with pytest.raises(SubmissionError, match="submission not found"):
        read_submission(tmp_path)


def test_check_submission_lists_at_most_ten_problems(tmp_path):
    test = pd.Series([f"images/{i}.jpg" for i in range(30)])
    rows = "".join(f"images/{i}.jpg,pinus{i}\n" for i in range(30))
    path = tmp_path / "submission.csv"
    path.write_text("image,label\n" + rows, encoding="utf-8")
    with pytest.raises(SubmissionError) as info:
        check_submission(path, test, CLASSES, COLUMNS)
    message = str(info.value)
    assert message.startswith(f"{path}: 30 problem(s):")
    assert message.count("is not a training class") == 10
    assert message.endswith("... and 20 more")


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
        (["sub.csv", "--test-csv", "nothing.csv"], "nothing.csv: not found"),
        (["sub.csv", "--train-csv", "nothing.csv"], "nothing.csv: not found"),
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


def test_cli_classes_and_train_csv_are_exclusive(prepared_project, monkeypatch, capsys):
    assert cli(["sub.csv", "--classes", "a", "--train-csv", "b"], monkeypatch) == 2
    assert "not allowed with argument" in capsys.readouterr().err


def test_cli_as_a_subprocess_has_no_traceback(prepared_project):
    (prepared_project / "bad.csv").write_bytes(
        "image,label\nimages/5.jpg,\xe9rable\n".encode("latin-1")
    )
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    command = [sys.executable, "-m", "pipeline.tools.validate"]
    ok = subprocess.run(
        [*command, "sub.csv"],
        cwd=prepared_project,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("OK: sub.csv: 3 rows")
    bad = subprocess.run(
        [*command, "bad.csv"],
        cwd=prepared_project,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert bad.returncode == 2
    assert "error: bad.csv: not UTF-8 text (line 2: byte 0xe9)" in bad.stderr
    assert "Traceback" not in bad.stderr
