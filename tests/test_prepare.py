"""Stage `prepare`: every bad input stops it with the file (and row) named and nothing written;
valid inputs, whatever their CSV quirks or image modes, give consistent prepared tables."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.competition.inputs import InputDataError
from pipeline.config.params import ParamsError
from pipeline.data.tables import load_table
from pipeline.io.console import PipelineError
from pipeline.stages import check as check_stage
from pipeline.stages import prepare as prepare_stage

try:
    from helpers import images as imgs
except ImportError:  # tests/ is a package (tests/__init__.py): import through it
    from tests.helpers import images as imgs

REPO_ROOT = Path(__file__).resolve().parents[1]
COMP = "comp"  # data.root, relative to the project (the test's cwd)
PREPARED = Path("data/prepared")


def write_params(workdir: Path, **data) -> None:
    params = {"data": {"root": COMP, **data}, "train": {"models": {"d2l_resnet11": {}}}}
    (workdir / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty project folder (the cwd) with a minimal params.yaml reading `comp/`."""
    # Not named `project`: conftest.py has a fixture of that name (a DVC checkout).
    monkeypatch.chdir(tmp_path)
    write_params(tmp_path)
    return tmp_path


@pytest.fixture
def comp(workdir: Path) -> imgs.Competition:
    """A valid competition folder at workdir/comp: 3 classes × 6 train images, 4 test images."""
    return imgs.write_competition(workdir / COMP)


def leftovers(workdir: Path) -> list[str]:
    """Temporary siblings atomic_path may have left next to data/prepared."""
    data = workdir / "data"
    return sorted(p.name for p in data.glob(".prepared.*")) if data.is_dir() else []


def assert_nothing_written(workdir: Path) -> None:
    assert not (workdir / PREPARED).exists(), "data/prepared was written despite the error"
    assert leftovers(workdir) == []


def has_row(message: str, number: int) -> bool:
    return re.search(rf"\brow {number}\b", message) is not None


def fails(workdir: Path, *fragments: str, rows: tuple[int, ...] = ()) -> str:
    """Run main(); it must raise InputDataError naming every fragment and row; nothing written."""
    with pytest.raises(PipelineError) as info:
        prepare_stage.main([])
    assert isinstance(info.value, InputDataError)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in message:\n{message}"
    for number in rows:
        assert has_row(message, number), f"'row {number}' not in message:\n{message}"
    assert_nothing_written(workdir)
    return message


def rel(comp: imgs.Competition, image: str) -> str:
    """How prepare names an image file: data.root joined with the CSV cell."""
    return os.path.normpath(Path(COMP) / image)


def table_name(comp: imgs.Competition, name: str) -> str:
    return str(Path(COMP) / name)


# ----------------------------------------------------------------------------------------------
# Bad images


@pytest.mark.parametrize("breakage", ["missing", "truncated", "zero_bytes", "text"])
def test_bad_image_is_refused_with_file_and_row(workdir, comp, breakage):
    image, _ = comp.train[4]
    path = comp.root / image
    if breakage == "missing":
        path.unlink()
    elif breakage == "truncated":
        imgs.write_truncated_jpeg(path)
    elif breakage == "zero_bytes":
        imgs.write_empty(path)
    else:
        imgs.write_text_file(path)
    message = fails(
        workdir,
        table_name(comp, "train.csv"),
        rel(comp, image),
        rows=(imgs.csv_line_of(comp.train_csv, image),),
    )
    if breakage == "missing":
        assert "not found" in message
    else:
        assert "cannot read image" in message
    # Only the broken image is reported.
    assert message.count("row ") == 1


def test_bad_test_image_names_test_csv(workdir, comp):
    image = comp.test[2]
    imgs.write_truncated_jpeg(comp.root / image)
    fails(
        workdir,
        table_name(comp, "test.csv"),
        rel(comp, image),
        rows=(imgs.csv_line_of(comp.test_csv, image),),
    )


def test_every_bad_image_is_reported_at_once(workdir, comp):
    broken = [comp.train[1][0], comp.train[7][0]]
    (comp.root / broken[0]).unlink()
    imgs.write_empty(comp.root / broken[1])
    fails(
        workdir,
        *(rel(comp, b) for b in broken),
        rows=tuple(imgs.csv_line_of(comp.train_csv, b) for b in broken),
    )


def test_image_cell_naming_a_directory_is_refused(workdir, comp):
    rows = list(comp.train)
    rows[3] = ("images", rows[3][1])  # the images/ folder itself
    imgs.write_csv(comp.train_csv, ["image", "label"], rows)
    fails(workdir, table_name(comp, "train.csv"), rows=(5,))


@pytest.mark.parametrize("table", ["train.csv", "test.csv"])
def test_decompression_bomb_is_refused(workdir, comp, table):
    # 30,000 x 30,000 = 900 Mpx (2.7 GB as RGB) in a PNG of about 100 KB.
    bomb = "images/bomb.png"
    imgs.write_bomb_png(comp.root / bomb)
    if table == "train.csv":
        rows = [*comp.train[:2], (bomb, comp.train[2][1]), *comp.train[3:]]
        imgs.write_csv(comp.train_csv, ["image", "label"], rows)
    else:
        tests = [comp.test[0], bomb, *comp.test[2:]]
        imgs.write_csv(comp.test_csv, ["image"], [[t] for t in tests])
        imgs.write_csv(comp.sample_csv, ["image", "label"], [[t, "x"] for t in tests])
    fails(
        workdir,
        table_name(comp, table),
        rel(comp, bomb),
        "30000x30000 pixels",
        "decompression bomb",
        rows=(4 if table == "train.csv" else 3,),
    )


def test_the_pixel_limit_is_data_max_megapixels(workdir, comp):
    write_params(workdir, max_megapixels=0.0005)  # the images are 32x32 = 0.001 megapixels
    fails(workdir, table_name(comp, "train.csv"), "over the limit of 0.0005 megapixels")


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
    assert "row 4, row 8" in message


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
    fails(workdir, table_name(comp, "test.csv"), table_name(comp, "train.csv"), shared)


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
        "inside",
        rows=(4 if table == "train.csv" else 3,),
    )
    assert message.count("row ") == 1


@pytest.mark.parametrize("change", ["reordered", "other_image", "row_missing"])
def test_sample_submission_not_matching_test_csv(workdir, comp, change):
    images = list(comp.test)
    if change == "reordered":
        images[0], images[1] = images[1], images[0]
    elif change == "other_image":
        images[2] = "images/999.jpg"
    else:
        images = images[:-1]
    imgs.write_csv(comp.sample_csv, ["image", "label"], [[i, "x"] for i in images])
    fails(workdir, table_name(comp, "sample_submission.csv"), "test.csv")


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


def run_cli(workdir: Path) -> subprocess.CompletedProcess:
    """`python -m pipeline.prepare` in workdir, as DVC runs it."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-m", "pipeline.stages.prepare"],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


# ----------------------------------------------------------------------------------------------
# Bad params: every stage validates the whole params.yaml before it reads or writes anything

BAD_PARAMS = {
    "wrong_type": ("data.root", 5, "data.root = 5: Input should be a valid string"),
    "unknown_key": ("data.image_column", "file", "data.image_column: unknown key"),
    "negative_epochs": (
        "train.defaults.epochs",
        -1,
        "train.defaults.epochs = -1: Input should be greater than 0",
    ),
    "unknown_backbone": (
        "train.models",
        {"resnet1800": {}},
        "train.models.resnet1800: unknown backbone 'resnet1800'",
    ),
}


def write_bad_params(workdir: Path, case: str) -> str:
    """params.yaml reading the valid comp/ folder but for one bad key; return the message."""
    key, value, expected = BAD_PARAMS[case]
    params = {"data": {"root": COMP}, "train": {"models": {"d2l_resnet11": {}}}}
    *parents, leaf = key.split(".")
    node = params
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value
    (workdir / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    return expected


@pytest.mark.parametrize("case", BAD_PARAMS)
def test_bad_params_stop_the_stage_naming_the_key_and_write_nothing(workdir, comp, case):
    """prepare stops on every schema problem; a backbone needs the model registry, which only
    stage check (the pipeline's first) and the stages that build models load."""
    expected = write_bad_params(workdir, case)
    stage = check_stage if case == "unknown_backbone" else prepare_stage
    with pytest.raises(ParamsError) as info:
        stage.main([])
    message = str(info.value)
    assert message.startswith("invalid parameters in params.yaml:")
    assert expected in message
    assert not (workdir / "data").exists()


@pytest.mark.parametrize("case", ["nan_label", "negative_epochs"])
def test_cli_bad_input_exits_2_with_one_error_and_no_traceback(workdir, comp, case):
    if case == "nan_label":
        rows = [*comp.train[:3], (comp.train[3][0], "NaN"), *comp.train[4:]]
        imgs.write_csv(comp.train_csv, ["image", "label"], rows)
        expected = "row 5: 'label' is 'NaN', a missing-value marker"
    else:
        expected = write_bad_params(workdir, case)
    result = run_cli(workdir)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(error_lines) == 1, result.stderr
    assert expected in result.stderr
    assert not (workdir / "data").exists()


# ----------------------------------------------------------------------------------------------
# Valid inputs


def read_prepared(workdir: Path):
    classes = json.loads((workdir / PREPARED / "classes.json").read_text(encoding="utf-8"))
    train = load_table(workdir / PREPARED / "train.csv")
    test = load_table(workdir / PREPARED / "test.csv")
    return classes, train, test


def check_consistent(workdir: Path, classes, train, test) -> None:
    assert classes == sorted(classes) and len(set(classes)) == len(classes)
    assert list(train.columns) == ["image", "label", "target", "path", "md5"]
    assert list(test.columns) == ["image", "path", "md5"]
    assert set(train["label"]) == set(classes)
    assert [classes[t] for t in train["target"]] == list(train["label"])
    for frame in (train, test):
        for path, md5 in zip(frame["path"], frame["md5"], strict=False):
            file = workdir / path
            assert file.is_file(), path
            assert not Path(path).is_absolute()  # relative to the project
            assert hashlib.md5(file.read_bytes()).hexdigest() == md5


def test_valid_folder(workdir, comp, capsys):
    prepare_stage.main([])
    classes, train, test = read_prepared(workdir)
    assert classes == comp.classes == sorted(classes)
    first_seen = list(dict.fromkeys(label for _, label in comp.train))
    assert first_seen != classes  # so the order really comes from sorting
    assert list(zip(train["image"], train["label"], strict=False)) == comp.train
    assert list(test["image"]) == comp.test
    check_consistent(workdir, classes, train, test)
    for image, path in zip(train["image"], train["path"], strict=False):
        assert (workdir / path).resolve() == (comp.root / image).resolve()
    assert len(set(train["md5"])) == len(train)  # distinct images
    assert leftovers(workdir) == []
    assert f"{len(comp.train)} train images in 3 classes" in capsys.readouterr().out


def test_prepare_function_returns_the_tables(workdir, comp):
    from pipeline.config.schema import DataParams

    classes, train, test = prepare_stage.prepare(DataParams(root=COMP))
    assert classes == comp.classes
    assert len(train) == len(comp.train) and len(test) == len(comp.test)
    assert not (workdir / "data").exists()  # prepare() itself writes nothing


def test_bom_and_padded_cells_are_stripped(workdir, comp):
    train = "".join(f"  {image} ,\t{label}  \n" for image, label in comp.train)
    comp.train_csv.write_text("\ufeff image , label \n" + train, encoding="utf-8")
    test = "".join(f" {image}  \n" for image in comp.test)
    comp.test_csv.write_text("\ufeffimage \n" + test, encoding="utf-8")
    sample = "".join(f"{image} , x\n" for image in comp.test)
    comp.sample_csv.write_text("\ufeffimage, label\n" + sample, encoding="utf-8")
    prepare_stage.main([])
    classes, train_out, test_out = read_prepared(workdir)
    assert list(zip(train_out["image"], train_out["label"], strict=False)) == comp.train
    assert list(test_out["image"]) == comp.test
    assert classes == comp.classes
    check_consistent(workdir, classes, train_out, test_out)


def test_extra_columns_are_ignored(workdir, comp):
    imgs.write_csv(
        comp.train_csv,
        ["id", "image", "notes", "label"],
        [[str(i), image, "whatever, really", label] for i, (image, label) in enumerate(comp.train)],
    )
    imgs.write_csv(comp.test_csv, ["image", "id"], [[image, "7"] for image in comp.test])
    prepare_stage.main([])
    classes, train, test = read_prepared(workdir)
    assert list(zip(train["image"], train["label"], strict=False)) == comp.train
    check_consistent(workdir, classes, train, test)


def test_custom_column_names(workdir):
    comp = imgs.write_competition(workdir / COMP, image_col="file", label_col="species")
    write_params(workdir, image_col="file", label_col="species")
    prepare_stage.main([])
    classes, train, test = read_prepared(workdir)
    assert list(zip(train["image"], train["label"], strict=False)) == comp.train
    assert list(test["image"]) == comp.test
    check_consistent(workdir, classes, train, test)


def test_custom_column_names_missing_from_csv(workdir, comp):
    write_params(workdir, image_col="file", label_col="species")
    message = fails(workdir, table_name(comp, "train.csv"), "'file'", "'species'")
    assert "found ['image', 'label']" in message


SPECIAL_IMAGES = {
    "grayscale_jpeg": ("jpg", lambda p: imgs.write_grayscale(p)),
    "grayscale_png": ("png", lambda p: imgs.write_grayscale(p)),
    "rgba": ("png", imgs.write_rgba),
    "palette_transparent": ("png", lambda p: imgs.write_palette(p, transparency=True)),
    "palette": ("png", lambda p: imgs.write_palette(p, transparency=False)),
    "cmyk": ("jpg", imgs.write_cmyk_jpeg),
    "16bit": ("png", imgs.write_16bit_png),
    "exif_rotated": ("jpg", imgs.write_exif_rotated_jpeg),
}


@pytest.mark.parametrize("kind", SPECIAL_IMAGES)
def test_images_of_any_mode_are_accepted(workdir, comp, kind):
    suffix, write = SPECIAL_IMAGES[kind]
    train_image, test_image = f"images/{kind}_train.{suffix}", f"images/{kind}_test.{suffix}"
    write(comp.root / train_image)
    write(comp.root / test_image)
    rows = [*comp.train, (train_image, comp.train[0][1])]
    imgs.write_csv(comp.train_csv, ["image", "label"], rows)
    imgs.write_csv(comp.test_csv, ["image"], [[t] for t in [*comp.test, test_image]])
    imgs.write_csv(
        comp.sample_csv, ["image", "label"], [[t, "x"] for t in [*comp.test, test_image]]
    )
    prepare_stage.main([])
    classes, train, test = read_prepared(workdir)
    assert list(train["image"])[-1] == train_image
    assert list(test["image"])[-1] == test_image
    check_consistent(workdir, classes, train, test)


def test_rerun_replaces_previous_output_entirely(workdir, comp):
    prepare_stage.main([])
    (workdir / PREPARED / "stale.txt").write_text("from an older run", encoding="utf-8")
    # Second version of the data: one class and one test image fewer.
    kept = [(image, label) for image, label in comp.train if label != comp.classes[0]]
    imgs.write_csv(comp.train_csv, ["image", "label"], kept)
    imgs.write_csv(comp.test_csv, ["image"], [[t] for t in comp.test[:-1]])
    imgs.write_csv(comp.sample_csv, ["image", "label"], [[t, "x"] for t in comp.test[:-1]])
    prepare_stage.main([])
    assert sorted(p.name for p in (workdir / PREPARED).iterdir()) == [
        "classes.json",
        "test.csv",
        "train.csv",
    ]
    classes, train, test = read_prepared(workdir)
    assert classes == comp.classes[1:]
    assert list(zip(train["image"], train["label"], strict=False)) == kept
    assert list(test["image"]) == comp.test[:-1]
    check_consistent(workdir, classes, train, test)
    assert leftovers(workdir) == []
    assert sorted(p.name for p in (workdir / "data").iterdir()) == ["prepared"]


def test_relative_data_root_is_the_project_roots_not_the_cwds(workdir, comp, monkeypatch):
    from pipeline.config.paths import data_root
    from pipeline.config.schema import DataParams

    sub = workdir / "notebooks"
    sub.mkdir()
    monkeypatch.chdir(sub)
    assert data_root(COMP) == Path("..") / COMP
    classes, train, test = prepare_stage.prepare(DataParams(root=COMP))
    assert len(classes) == 3 and all(Path(p).is_file() for p in train["path"])
    with pytest.raises(InputDataError, match=r"data.root = 'no/such': no such folder"):
        prepare_stage.prepare(DataParams(root="no/such"))
    monkeypatch.chdir(workdir)
    assert data_root(COMP) == Path(COMP)
    assert data_root(workdir / COMP) == workdir / COMP


def test_image_cells_without_the_images_folder_are_one_error_saying_so(workdir, comp):
    train = comp.train_csv.read_text(encoding="utf-8")
    comp.train_csv.write_text(train.replace("images/", ""), encoding="utf-8")
    message = fails(workdir, "image files not found under", "write the column as images/<file>")
    assert message.count("\n") < 3  # one paragraph, not a line per image


def test_stage_check_names_a_missing_competition_folder_and_what_to_do(workdir):
    with pytest.raises(PipelineError) as info:
        check_stage.main([])
    message = str(info.value)
    assert f"data.root = '{COMP}': no such folder ({workdir.resolve() / COMP})" in message
    for fix in ("leaf kaggle download", "dvc pull", "set data.root"):
        assert fix in message
    write_params(workdir, root="data/synthetic")  # stage generate writes it after check
    check_stage.main([])
