"""Stage `split`: assign every labelled image to a validation fold (stratified K-fold).

    python -m pipeline.stages.split

Reads data/prepared/train.csv and writes data/folds.csv: the prepared rows plus a `fold`
column. Fold k's validation part is the rows with fold == k; training uses the others. Every
class appears in every fold's validation part when it has at least `split.n_splits` images; a
rarer class is spread over as many folds as it has images, with a warning naming it (a class
of one image is never in the training part of its own fold). Exact copies of an image (the same
md5 under other names) share the first one's fold, so no fold validates an image its models
trained on. No image is copied.
"""

from __future__ import annotations

import warnings

import pandas as pd
from sklearn.model_selection import StratifiedKFold

from pipeline.config.params import load_params
from pipeline.config.paths import FOLDS_FILE, PREPARED_TRAIN
from pipeline.data.tables import read_input_table
from pipeline.io.console import PipelineError, parse_stage_args, run, warn
from pipeline.io.files import write_csv

# How many classes a message lists by name before it gives only the count.
CLASSES_SHOWN = 5


def named_classes(counts: pd.Series) -> str:
    """'name' (count), ... for the rarest of `counts`, CLASSES_SHOWN of them, then how many more."""
    rarest = counts.sort_values()
    listed = ", ".join(f"{name!r} ({n})" for name, n in rarest.head(CLASSES_SHOWN).items())
    if len(rarest) > CLASSES_SHOWN:
        listed += f" and {len(rarest) - CLASSES_SHOWN} more"
    return listed


def check_class_counts(labels: pd.Series, n_splits: int) -> None:
    """Stop when no class fills every fold (StratifiedKFold cannot split); warn about the classes
    too rare to be in every fold's validation part."""
    counts = labels.value_counts()
    too_small = counts[counts < n_splits]
    if too_small.empty:
        return
    most = int(counts.max())
    if len(too_small) == len(counts):
        advice = (
            f"lower split.n_splits to at most {most}"
            if most >= 2
            else "every class has a single image, so no fold can validate a class it trained on"
        )
        raise PipelineError(
            f"split.n_splits = {n_splits}: every class has fewer images than folds (the most: "
            f"{most}); {advice}"
        )
    warn(
        f"split.n_splits = {n_splits}: {len(too_small)} class(es) have fewer images than folds, "
        f"so some folds validate without them: {named_classes(too_small)}"
    )


def assign_folds(train: pd.DataFrame, n_splits: int, shuffle: bool, seed: int) -> pd.DataFrame:
    """Return `train` with a `fold` column from StratifiedKFold on `target`."""
    check_class_counts(train["label"], n_splits)
    splitter = StratifiedKFold(
        n_splits=n_splits, shuffle=shuffle, random_state=seed if shuffle else None
    )
    folds = train.copy()
    folds["fold"] = -1
    with warnings.catch_warnings():  # check_class_counts named the classes already
        warnings.filterwarnings("ignore", "The least populated class", UserWarning)
        splits = list(splitter.split(folds, folds["target"]))
    for fold, (_, valid_index) in enumerate(splits):
        folds.loc[folds.index[valid_index], "fold"] = fold
    return folds


def keep_copies_together(folds: pd.DataFrame) -> int:
    """Give every exact copy of an image (the same `md5`) the fold of its first row, in place;
    returns how many images moved. Without copies the folds stay as they are."""
    first = folds.groupby("md5", sort=False)["fold"].transform("first")
    moved = int((first != folds["fold"]).sum())
    folds["fold"] = first
    return moved


def warn_of_copies_labelled_apart(folds: pd.DataFrame) -> None:
    """Warn, with an example, when copies of one image (the same `md5`) carry other labels."""
    labels = folds.groupby("md5", sort=False)["label"].nunique()
    apart = labels[labels > 1]
    if apart.empty:
        return
    example = folds[folds["md5"] == apart.index[0]].drop_duplicates("label").head(2)
    named = " and ".join(
        f"{image} ({label!r})" for image, label in example[["image", "label"]].values
    )
    warn(
        f"{len(apart)} image(s) have copies labelled otherwise, e.g. {named}; "
        "the models are trained on both"
    )


def main(argv: list[str] | None = None) -> pd.DataFrame:
    parse_stage_args(argv, __doc__, "python3 -m pipeline.stages.split")
    params = load_params()
    train = read_input_table(PREPARED_TRAIN, ("label", "target", "md5"))
    folds = assign_folds(train, params.split.n_splits, params.split.shuffle, params.base.seed)
    copies = int(folds["md5"].duplicated().sum())
    if copies:
        moved = keep_copies_together(folds)
        print(
            f"split: {copies} labelled images are exact copies of another (the same bytes); "
            f"{moved} moved to their first copy's fold, so no fold validates on what it trained on"
        )
        warn_of_copies_labelled_apart(folds)
    write_csv(FOLDS_FILE, folds)
    sizes = folds["fold"].value_counts().sort_index().tolist()
    print(
        f"split: {len(folds)} images into {params.split.n_splits} folds of sizes {sizes} "
        f"-> {FOLDS_FILE}"
    )
    return folds


if __name__ == "__main__":
    run(main)
