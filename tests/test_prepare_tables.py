"""Stage `prepare` and the CSV tables: every bad cell, row, encoding, column or table stops it with
the file (and row) named and nothing written, and a failed run keeps the previous output."""

from __future__ import annotations

import pytest
from helpers import images as imgs
from helpers.prepare import (
    PREPARED,
    assert_nothing_written,
    fails,
    has_row,
    leftovers,
    read_prepared,
    rel,
    run_cli,
    table_name,
    write_params,
)

from pipeline.competition.inputs import InputDataError
from pipeline.stages import prepare as prepare_stage

# ----------------------------------------------------------------------------------------------
# Bad cells and tables


@pytest.mark.parametrize("label", ["", "   "], ids=["empty", "whitespace"])
def test_empty_label_is_refused_with_row(workdir, comp, label):
    rows = list(comp.train)
    rows[5] = (rows[5][0], label)
    imgs.write_csv(comp.train_csv, ["image", "label"], rows)
    fails(workdir, table_name(comp, "train.csv"), "empty 'label'", rows=(7,))


@pytest.mark.parametrize("label", ["NaN", "nan", "NA", "null", "N/A", "None", "#N/A", "<NA>"])
def test_missing_value_marker_as_label_is_refused_with_row(workdir, comp, label):
    # Read as text, "NaN" would silently become a class; pandas and Kaggle read it as missing.
    rows = list(comp.train)
    rows[5] = (rows[5][0], label)
    rows[9] = (rows[9][0], f" {label} ")
    imgs.write_csv(comp.train_csv, ["image", "label"], rows)
    message = fails(
        workdir,
        table_name(comp, "train.csv"),
        f"'label' is {label!r}",
        "missing-value marker",
        rows=(7, 11),
    )
    assert message.count("row ") == 2


def test_label_merely_containing_a_marker_is_a_class(workdir, comp):
    rows = [(image, f"{label}_nana") for image, label in comp.train]
    imgs.write_csv(comp.train_csv, ["image", "label"], rows)
    prepare_stage.main([])
    classes, _, _ = read_prepared(workdir)
    assert classes == sorted(f"{c}_nana" for c in comp.classes)


def test_duplicate_image_rows_are_refused(workdir, comp):
    rows = list(comp.train)
    rows[6] = (rows[2][0], rows[6][1])  # line 8 repeats line 4's image
    imgs.write_csv(comp.train_csv, ["image", "label"], rows)
    message = fails(
        workdir, table_name(comp, "train.csv"), rows[2][0], "more than once", rows=(4, 8)
    )
    assert "row 4, row 8): keep one row of it" in message


def test_row_numbers_count_blank_lines(workdir, comp):
    lines = comp.train_csv.read_text(encoding="utf-8").splitlines()
    image = lines[5].split(",")[0]
    lines[5] = f"{image},"  # line 6: empty label
    lines.insert(2, "")  # a blank line 3: the bad row is now line 7 of the file
    comp.train_csv.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert imgs.csv_line_of(comp.train_csv, image) == 7
    fails(workdir, table_name(comp, "train.csv"), "empty 'label'", rows=(7,))


@pytest.mark.parametrize("encoding", ["latin-1", "utf-16"])
def test_csv_not_in_utf8_is_refused_with_line(workdir, comp, encoding):
    rows = [*comp.train[:4], (comp.train[4][0], "érable"), *comp.train[5:]]
    text = "image,label\n" + "".join(f"{image},{label}\n" for image, label in rows)
    comp.train_csv.write_bytes(text.encode(encoding))
    line = 6 if encoding == "latin-1" else 1  # UTF-16 fails at its own byte-order mark
    fails(
        workdir, table_name(comp, "train.csv"), f"not UTF-8 text (line {line}:", "save it as UTF-8"
    )


@pytest.mark.parametrize(
    ("row", "expected"),
    [(2, "row 2 has more cells than the header"), (5, "Expected 2 fields in line 5, saw 3")],
)
def test_row_with_more_cells_than_the_header_is_refused(workdir, comp, row, expected):
    # On row 2, pandas would silently take the first column as an index and shift the others.
    lines = comp.train_csv.read_text(encoding="utf-8").splitlines()
    lines[row - 1] += ",acer_rubrum"  # an unquoted comma inside a label
    comp.train_csv.write_text("\n".join(lines) + "\n", encoding="utf-8")
    fails(workdir, table_name(comp, "train.csv"), expected)


def test_missing_label_column_lists_the_columns_found(workdir, comp):
    imgs.write_csv(comp.train_csv, ["image", "species"], comp.train)
    message = fails(workdir, table_name(comp, "train.csv"), "'label'")
    assert "found ['image', 'species']" in message


def test_missing_train_csv(workdir, comp):
    comp.train_csv.unlink()
    fails(workdir, table_name(comp, "train.csv"), "not found")


def test_missing_data_root(workdir):
    write_params(workdir, root="no/such/folder")
    fails(workdir, "no/such/folder", "no such folder")


def test_image_in_both_train_and_test(workdir, comp):
    shared = comp.test[1]
    imgs.write_csv(comp.train_csv, ["image", "label"], [*comp.train, (shared, comp.train[0][1])])
    message = fails(workdir, table_name(comp, "test.csv"), table_name(comp, "train.csv"), rows=(3,))
    assert f"{shared!r} is a training image too" in message and "keep it in one table" in message


def test_image_in_both_train_and_test_under_another_spelling(workdir, comp):
    shared = comp.train[0][0]
    imgs.write_csv(comp.test_csv, ["image"], [[f"./{shared}"], *([t] for t in comp.test)])
    imgs.write_csv(
        comp.sample_csv, ["image", "label"], [[f"./{shared}", "x"], *([t, "x"] for t in comp.test)]
    )
    try:
        prepare_stage.main([])
    except InputDataError as err:
        assert shared in str(err)
    else:
        raise AssertionError(f"{shared} is in train.csv and (as ./{shared}) in test.csv")
    assert_nothing_written(workdir)


@pytest.mark.parametrize("table", ["train.csv", "test.csv"])
@pytest.mark.parametrize("escaping", ["../outside.jpg", "../../etc/passwd", "/etc/passwd"])
def test_image_path_escaping_the_root_is_refused(workdir, comp, table, escaping):
    imgs.write_jpeg(workdir / "outside.jpg", index=99)  # exists, so only its place is wrong
    if table == "train.csv":
        rows = [*comp.train[:2], (escaping, comp.train[2][1]), *comp.train[3:]]
        imgs.write_csv(comp.train_csv, ["image", "label"], rows)
    else:
        tests = [*comp.test[:1], escaping, *comp.test[2:]]
        imgs.write_csv(comp.test_csv, ["image"], [[t] for t in tests])
        imgs.write_csv(comp.sample_csv, ["image", "label"], [[t, "x"] for t in tests])
    message = fails(
        workdir,
        table_name(comp, table),
        escaping,
        "is absolute; write it relative to data.root" if escaping[0] == "/" else "leaves data.root",
        rows=(4 if table == "train.csv" else 3,),
    )
    assert message.count("row ") == 1


@pytest.mark.parametrize(
    ("change", "detail"),
    [
        ("other_image", "row 4 is 'images/999.jpg', which test.csv does not list"),
        ("other_image", "set data.sample_submission: null to skip this check"),
        ("row_missing", "it lacks test.csv's 'images/21.jpg'"),
        ("row_repeated", "5 rows against test.csv's 4"),
    ],
)
def test_sample_submission_not_matching_test_csv(workdir, comp, change, detail):
    images = list(comp.test)
    if change == "other_image":
        images[2] = "images/999.jpg"
    elif change == "row_missing":
        images = images[:-1]
    else:
        images = [*images, images[0]]
    imgs.write_csv(comp.sample_csv, ["image", "label"], [[i, "x"] for i in images])
    fails(workdir, table_name(comp, "sample_submission.csv"), "test.csv", detail)


def test_a_missing_sample_file_is_a_warning_naming_the_key(workdir, comp, capsys):
    comp.sample_csv.unlink()
    prepare_stage.main([])
    assert "warning: data.sample_submission = 'sample_submission.csv': no such file in " in (
        capsys.readouterr().err
    )
    write_params(workdir, sample_submission=None)
    prepare_stage.main([])
    assert "warning" not in capsys.readouterr().err


def test_a_sample_submission_in_another_order_passes(workdir, comp):
    images = list(reversed(comp.test))  # Kaggle matches rows by image
    imgs.write_csv(comp.sample_csv, ["image", "label"], [[i, "x"] for i in images])
    prepare_stage.main([])
    assert (workdir / PREPARED / "test.csv").is_file()


def test_failed_run_keeps_the_previous_output(workdir, comp):
    prepare_stage.main([])
    before = {p.name: p.read_bytes() for p in (workdir / PREPARED).iterdir()}
    (comp.root / comp.train[0][0]).unlink()
    with pytest.raises(InputDataError):
        prepare_stage.main([])
    after = {p.name: p.read_bytes() for p in (workdir / PREPARED).iterdir()}
    assert after == before
    assert leftovers(workdir) == []


def test_cli_prints_error_and_exits_2_without_traceback(workdir, comp):
    image = comp.train[3][0]
    (comp.root / image).unlink()
    result = run_cli(workdir)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert error_lines, result.stderr
    assert table_name(comp, "train.csv") in error_lines[0]
    assert rel(comp, image) in result.stderr
    assert has_row(result.stderr, 5)
    assert_nothing_written(workdir)


def test_a_sample_naming_its_columns_otherwise_gives_the_setting_that_matches_it(workdir, comp):
    imgs.write_csv(comp.sample_csv, ["id", "category"], [[t, "x"] for t in comp.test])
    fails(
        workdir,
        table_name(comp, "sample_submission.csv"),
        "its header is ['id', 'category'], the submission's would be ['image', 'label']",
        "set data.submission_columns: [id, category] to write the sample's",
    )
    write_params(workdir, submission_columns=["id", "category"])
    prepare_stage.main([])
    assert (workdir / PREPARED / "test.csv").is_file()


def test_a_sample_with_its_label_column_first_gives_the_image_column_first(workdir, comp):
    imgs.write_csv(comp.sample_csv, ["Species", "ID"], [["x", t] for t in comp.test])
    fails(workdir, "set data.submission_columns: [ID, Species] to write the sample's")
    write_params(workdir, submission_columns=["Species", "ID"])
    fails(
        workdir,
        "its 'ID' column lists test.csv's images, not 'Species': set "
        "data.submission_columns: [ID, Species], the image column first",
    )
    write_params(workdir, submission_columns=["ID", "Species"])
    prepare_stage.main([])
    assert (workdir / PREPARED / "test.csv").is_file()


@pytest.mark.parametrize(
    ("header", "detail"),
    [
        (["image", "label", "score"], "the competition wants 3 columns, and this pipeline writes"),
        (["images/0.jpg", "x"], "its first line looks like a row; add the header line image,label"),
    ],
)
def test_a_sample_header_that_cannot_be_written_is_told_so(workdir, comp, header, detail):
    imgs.write_csv(comp.sample_csv, header, [[t, "x", "1"][: len(header)] for t in comp.test])
    fails(workdir, table_name(comp, "sample_submission.csv"), detail)


def test_a_wide_sample_of_probabilities_is_shown_short(workdir, comp):
    header = ["id", *(f"species_{k}" for k in range(99))]
    imgs.write_csv(comp.sample_csv, header, [[t, *["0.01"] * 99] for t in comp.test])
    message = fails(
        workdir, "['id', 'species_0', 'species_1', 'species_2', 'species_3', '... 95 more']"
    )
    assert "sample_submission: null" not in message  # skipping it would write a file Kaggle rejects


def test_an_empty_sample_file_is_told_so(workdir, comp):
    comp.sample_csv.write_bytes(b"")
    fails(workdir, table_name(comp, "sample_submission.csv"), "empty file (0 bytes)")


def test_tables_of_other_column_names_get_the_settings_naming_them(workdir, comp):
    imgs.write_csv(comp.train_csv, ["id_code", "diagnosis"], comp.train)
    fails(
        workdir,
        "found ['id_code', 'diagnosis'] (set data.image_col: id_code and "
        "data.label_col: diagnosis)",
    )
    write_params(workdir, image_col="id_code", label_col="diagnosis")
    imgs.write_csv(comp.test_csv, ["file"], [[t] for t in comp.test])
    fails(workdir, "found ['file'] (set data.image_col: file)")


def test_a_missing_table_names_the_tables_beside_it(workdir, comp):
    comp.train_csv.rename(comp.root / "train_labels.csv")
    fails(workdir, "holds sample_submission.csv, test.csv, train_labels.csv)")


def test_a_table_without_its_header_line_is_told_so(workdir, comp):
    imgs.write_csv(comp.test_csv, ["images/0.jpg"], [[t] for t in comp.test[1:]])
    fails(workdir, "missing column(s) ['image']", "looks like a row: add the header line image")
