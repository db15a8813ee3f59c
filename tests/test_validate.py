"""`python -m pipeline.validate`'s checks: every problem of a submission file is named by row, and
a file that cannot be read is refused with a message. The command line (one `error:` paragraph,
exit code 2, never a traceback): test_validate_cli.py."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from helpers.submissions import CLASSES, COLUMNS, TEST, valid

from pipeline.competition.submission import (
    SubmissionError,
    check_submission,
    read_submission,
    submission_problems,
)
from pipeline.io.console import format_problems


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
        (
            b"image,label\nimages/5.jpg,acer\nimages/2.jpg,acer,x\n",
            "Expected 2 fields in line 3, saw 3)",
        ),
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
    with pytest.raises(SubmissionError, match="a folder, not a submission"):
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
