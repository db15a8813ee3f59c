"""Stage `split`: assign every labelled image to a validation fold (stratified K-fold).

    python -m pipeline.stages.split

Reads data/prepared/train.csv and writes data/folds.csv: the prepared rows plus a `fold`
column. Fold k's validation part is the rows with fold == k; training uses the others. Every
class appears in every fold's validation part, so a class needs at least `split.n_splits`
images. No image is copied.
"""

from __future__ import annotations

import pandas as pd
from sklearn.model_selection import StratifiedKFold

from pipeline.config.params import load_params
from pipeline.config.paths import FOLDS_FILE, PREPARED_TRAIN
from pipeline.data.tables import read_input_table
from pipeline.io.console import PipelineError, parse_stage_args, run
from pipeline.io.files import write_csv

# How many classes a message lists by name before it gives only the count.
CLASSES_SHOWN = 5

# The fewest folds the schema allows (split.n_splits >= 2).
MIN_SPLITS = 2


def check_class_counts(labels: pd.Series, n_splits: int) -> None:
    """Every class needs at least one image per validation fold."""
    counts = labels.value_counts()
    too_small = counts[counts < n_splits]
    if not too_small.empty:
        smallest = too_small.sort_values()
        listed = ", ".join(f"{name!r} ({n})" for name, n in smallest.head(CLASSES_SHOWN).items())
        if len(smallest) > CLASSES_SHOWN:
            listed += f" and {len(smallest) - CLASSES_SHOWN} more"
        fewest = int(counts.min())
        advice = (
            f"lower split.n_splits to at most {fewest} or add images"
            if fewest >= MIN_SPLITS
            else f"add images (every class needs at least {MIN_SPLITS}, the fewest folds "
            "split.n_splits allows) or drop the class"
        )
        raise PipelineError(
            f"split.n_splits = {n_splits}: {len(too_small)} class(es) have fewer images than "
            f"folds: {listed}; {advice}"
        )


def assign_folds(train: pd.DataFrame, n_splits: int, shuffle: bool, seed: int) -> pd.DataFrame:
    """Return `train` with a `fold` column from StratifiedKFold on `target`."""
    check_class_counts(train["label"], n_splits)
    splitter = StratifiedKFold(
        n_splits=n_splits, shuffle=shuffle, random_state=seed if shuffle else None
    )
    folds = train.copy()
    folds["fold"] = -1
    for fold, (_, valid_index) in enumerate(splitter.split(folds, folds["target"])):
        folds.loc[folds.index[valid_index], "fold"] = fold
    return folds


def main(argv: list[str] | None = None) -> pd.DataFrame:
    parse_stage_args(argv, __doc__, "python3 -m pipeline.stages.split")
    params = load_params()
    train = read_input_table(PREPARED_TRAIN, ("label", "target"))
    folds = assign_folds(train, params.split.n_splits, params.split.shuffle, params.base.seed)
    write_csv(FOLDS_FILE, folds)
    sizes = folds["fold"].value_counts().sort_index().tolist()
    print(
        f"split: {len(folds)} images into {params.split.n_splits} folds of sizes {sizes} "
        f"-> {FOLDS_FILE}"
    )
    return folds


if __name__ == "__main__":
    run(main)
