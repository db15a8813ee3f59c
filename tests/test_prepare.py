"""Stage `prepare`: valid inputs, whatever their CSV quirks, give consistent prepared tables, and
every stage validates the whole params.yaml before it reads or writes anything. Bad images:
test_prepare_images.py; bad cells and tables: test_prepare_tables.py."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from helpers import images as imgs
from helpers.prepare import (
    COMP,
    PREPARED,
    check_consistent,
    fails,
    leftovers,
    read_prepared,
    run_cli,
    table_name,
    write_params,
)

from pipeline.competition.inputs import InputDataError
from pipeline.config.params import ParamsError
from pipeline.io.console import PipelineError
from pipeline.stages import check as check_stage
from pipeline.stages import prepare as prepare_stage

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


def test_test_images_that_copy_labelled_ones_are_counted_with_an_example(workdir, comp, capsys):
    prepare_stage.main([])
    assert "exact cop" not in capsys.readouterr().out
    for test_image, train_row in ((comp.test[1], 4), (comp.test[2], 0)):
        (comp.root / test_image).write_bytes((comp.root / comp.train[train_row][0]).read_bytes())
    prepare_stage.main([])
    assert (
        f"2 test images are exact copies of labelled ones (the same bytes), e.g. {comp.test[1]} "
        f"of {comp.train[4][0]} ({comp.train[4][1]})"
    ) in capsys.readouterr().out


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


def test_dotted_column_names_are_columns_not_a_header_less_row(workdir, comp):
    imgs.write_csv(comp.train_csv, ["image.name", "label.name"], comp.train)  # pandas' label.1 too
    fails(workdir, "(set data.image_col: image.name and data.label_col: label.name)")


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


def test_stage_check_names_a_missing_competition_folder_and_what_to_do(workdir):
    with pytest.raises(PipelineError) as info:
        check_stage.main([])
    message = str(info.value)
    assert f"data.root = '{COMP}': no such folder ({workdir.resolve() / COMP})" in message
    for fix in ("leaf kaggle download", "dvc pull", "set data.root"):
        assert fix in message
    write_params(workdir, root="data/synthetic")  # stage generate writes it after check
    check_stage.main([])
