"""Stage `prepare`: check the competition folder and write clean tables and the class list.

    python -m pipeline.stages.prepare

Reads `data.root` (a Kaggle Classify Leaves style folder: train.csv, test.csv, images/,
optionally sample_submission.csv; a relative root is the project root's, the folder holding
params.yaml, not the working directory's; an image cell plus `data.image_suffix` names a file
in its folder `data.train_images` or `data.test_images`, the root itself by default; see
pipeline.competition.image_paths) and writes data/prepared/:
- classes.json: the sorted species names; a label's index there is its target;
- train.csv: image, label, target, path, md5;
- test.csv: image, path, md5.
`path` is where the image file is, relative to the project; `md5` is its content hash, so any
change to an image reaches the stages that follow even though the tables keep the same rows.
Every problem in the input stops the stage with the file and row named, before anything is
written.
"""

from __future__ import annotations

import pandas as pd

from pipeline.competition.image_paths import Place, check_image_places, resolve_paths
from pipeline.competition.inputs import (
    InputDataError,
    check_cells,
    check_classes,
    check_disjoint,
    check_duplicates,
    check_images,
    check_labels,
    check_not_empty,
    check_sample_submission,
    check_test_table,
    read_table,
)
from pipeline.config.params import load_params
from pipeline.config.paths import PREPARED_DIR, data_root
from pipeline.config.schema import DataParams
from pipeline.io.console import parse_stage_args, run, warn
from pipeline.io.files import atomic_path, write_csv, write_json


def prepare(params: DataParams) -> tuple[list[str], pd.DataFrame, pd.DataFrame]:
    """Check the competition folder; return (classes, train table, test table)."""
    root = data_root(params.root)  # relative roots are the project root's, not the cwd's
    if root.exists() and not root.is_dir():
        raise InputDataError(
            f"data.root = {params.root!r} is a file; point it at the competition folder "
            "(the one holding train.csv, test.csv and images/)"
        )
    if not root.is_dir():
        raise InputDataError(f"data.root = {params.root!r}: no such folder")
    train_path, test_path = root / params.train_csv, root / params.test_csv
    image_col, label_col = params.image_col, params.label_col

    train = read_table(train_path, [image_col, label_col])
    check_test_table(test_path, root, params.sample_submission)
    test = read_table(test_path, [image_col])
    check_cells(train, train_path, [image_col, label_col])
    check_cells(test, test_path, [image_col])
    check_not_empty(train, train_path, "training image")
    check_not_empty(test, test_path, "test image")
    check_labels(train[label_col], train_path, label_col)
    check_classes(train[label_col], train_path, label_col)
    if params.sample_submission and (root / params.sample_submission).is_file():
        check_sample_submission(
            root / params.sample_submission, test[image_col], params.submission_header
        )
    elif params.sample_submission:
        warn(
            f"data.sample_submission = {params.sample_submission!r}: no such file in {root}, so "
            "the submission's header and images are not checked against a sample; set it to "
            "the competition's sample file, or null if there is none"
        )

    places = {kind: Place.configured(root, params, kind) for kind in ("train", "test")}
    for kind, table, path in (("train", train, train_path), ("test", test, test_path)):
        key = "data.root" if places[kind].folder == root else f"data.{kind}_images"
        table["path"] = resolve_paths(table[image_col], places[kind], path, key)
    cells = {
        "train": (list(train[image_col]), train_path),
        "test": (list(test[image_col]), test_path),
    }
    check_image_places(root, params, cells, places)
    check_duplicates(train.rename(columns={image_col: "image"}), train_path)
    check_duplicates(test.rename(columns={image_col: "image"}), test_path)
    check_disjoint(train, test, image_col, train_path, test_path)
    limit = params.max_megapixels
    train["md5"] = check_images(train["path"], train_path, "checking train images", limit)
    test["md5"] = check_images(test["path"], test_path, "checking test images", limit)

    classes = sorted(train[label_col].unique())
    train["target"] = train[label_col].map({name: i for i, name in enumerate(classes)})
    train = train.rename(columns={image_col: "image", label_col: "label"})
    test = test.rename(columns={image_col: "image"})
    columns = ["image", "label", "target", "path", "md5"]
    return classes, train[columns].reset_index(drop=True), test.reset_index(drop=True)


def report_test_copies(train: pd.DataFrame, test: pd.DataFrame) -> None:
    """Say how many test images are exact copies (the same md5) of labelled ones, with one.

    Only said: the models predict them like any other test image.
    """
    labelled = train.drop_duplicates("md5").set_index("md5")
    copies = test[test["md5"].isin(labelled.index)]
    if copies.empty:
        return
    first = copies.iloc[0]
    twin = labelled.loc[first["md5"]]
    are = "image is an exact copy" if len(copies) == 1 else "images are exact copies"
    print(
        f"prepare: {len(copies)} test {are} of labelled ones (the same bytes), e.g. "
        f"{first['image']} of {twin['image']} ({twin['label']})"
    )


def main(argv: list[str] | None = None) -> None:
    parse_stage_args(argv, __doc__, "python3 -m pipeline.stages.prepare")
    params = load_params()
    classes, train, test = prepare(params.data)
    with atomic_path(PREPARED_DIR) as out:
        out.mkdir()
        write_json(out / "classes.json", classes)
        write_csv(out / "train.csv", train)
        write_csv(out / "test.csv", test)
    print(
        f"prepare: {len(train)} train images in {len(classes)} classes, "
        f"{len(test)} test images -> {PREPARED_DIR}"
    )
    report_test_copies(train, test)


if __name__ == "__main__":
    run(main)
