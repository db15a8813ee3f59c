"""Predict the species of new images with every trained model and fold, as the ensemble does.

    leaf predict PATH... [--top-k 5] [--csv OUT.csv]

PATHs are image files or folders (searched recursively for image files). Every cell of
train.models × train.folds that has a models/<model>/fold<k>/best.pt is used (a missing one is
skipped with a warning). Each model is rebuilt from its checkpoint (backbone, classes, model
params; `checkpoint.load_trained`, as stage pseudo does) and sees the images as training's
test loader does: its own eval transforms, uint8 batches normalised on the device
(loaders.DeviceLoader), its TTA views. With `meta.enabled`, stage meta's classifier of the
test images (models/meta/model.pkl, fitted on every labelled row) predicts from the images'
statistics (features.image_features) as one more model. The logits are averaged like stage
`ensemble`: over a model's folds, then over models, in the space of `ensemble.average` and with
the model weights it chose (data/ensemble/weights.json), renormalised over the models
present; so the images of the test set get the ensemble's test logits, the ones the submission
was made with.

Prints the top-k species and their probabilities per image, or with `--csv` writes them as a
long table: `image,rank,label,probability`, k rows per image, rank 1 first. Files that cannot be
read are listed after the predictions of the others, and the exit code is then 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.config.params import load_params
from pipeline.data.images import IMAGE_SUFFIXES, ImageReadError, load_image
from pipeline.ensemble.prediction import find_cells, predict_images
from pipeline.ensemble.scoring import log_softmax
from pipeline.io import console
from pipeline.io.console import PipelineError, command_parser, positive_int, progress
from pipeline.io.files import check_writable, write_csv


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders")
    parser.add_argument(
        "--top-k", type=positive_int, default=5, help="species to list per image (default: 5)"
    )
    parser.add_argument("--csv", type=Path, help="write image,rank,label,probability here")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    return command_parser("leaf predict", __doc__, add_arguments).parse_args(argv)


def find_images(paths: list[str]) -> tuple[list[Path], list[str]]:
    """Expand files and folders into image files; report paths that yield none.

    Args:
        paths: files (taken whatever their suffix) and folders (searched recursively for files
            with a suffix in IMAGE_SUFFIXES, in sorted order).

    Returns:
        The image files without duplicates, in the order given, and one problem message per
        path that does not exist or is a folder without images.
    """
    found, problems = [], []
    for name in paths:
        path = Path(name)
        if path.is_file():
            found.append(path)
        elif path.is_dir():
            images = sorted(
                p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
            )
            if not images:
                problems.append(f"{path}: no image files ({' '.join(IMAGE_SUFFIXES)}) in folder")
            found += images
        else:
            problems.append(f"{path}: no such file or folder")
    return list(dict.fromkeys(found)), problems


def readable_images(
    paths: list[Path], min_side: int, max_megapixels: float
) -> tuple[list[Path], list[str]]:
    """Split `paths` into images that decode and messages for those that do not."""
    good, problems = [], []
    for path in progress(paths, desc="check images", unit="img", leave=False):
        try:
            load_image(path, min_side=min_side, max_megapixels=max_megapixels)
            good.append(path)
        except ImageReadError as err:
            problems.append(str(err))
    return good, problems


def top_k_table(images: list[str], logits: np.ndarray, classes: list[str], k: int) -> pd.DataFrame:
    """The k most probable classes per image: columns image, rank, label, probability."""
    probs = np.exp(log_softmax(logits.astype(np.float64)))
    k = min(k, len(classes))
    order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return pd.DataFrame(
        {
            "image": np.repeat(images, k),
            "rank": np.tile(np.arange(1, k + 1), len(images)),
            "label": np.asarray(classes, dtype=object)[order].ravel(),
            "probability": np.take_along_axis(probs, order, axis=1).ravel().round(6),
        }
    )


def print_table(table: pd.DataFrame) -> None:
    """Each image's path, then its ranked labels and probabilities."""
    width = table["label"].str.len().max()
    for image, rows in table.groupby("image", sort=False):
        print(image)
        for row in rows.itertuples():
            print(f"  {row.rank:>2}. {row.label:<{width}}  {row.probability:.4f}")


def main(argv: list[str] | None = None) -> pd.DataFrame:
    return run(parse_args(argv))


def run(args: argparse.Namespace) -> pd.DataFrame:
    if args.csv:
        check_writable(args.csv, "--csv")
    params = load_params()
    cells = find_cells(params)
    paths, problems = find_images(args.paths)
    min_side = min(params.train.for_model(cell.model).image_size for cell in cells)
    paths, unreadable = readable_images(paths, min_side, params.data.max_megapixels)
    problems += unreadable
    table = pd.DataFrame(columns=["image", "rank", "label", "probability"])
    if paths:
        models = sorted({cell.model for cell in cells})
        print(
            f"predict: {len(paths)} image(s) with {len(cells)} checkpoint(s) of "
            f"{', '.join(models)}",
            file=sys.stderr,
        )
        logits, classes = predict_images(paths, cells, params)
        table = top_k_table([str(p) for p in paths], logits, classes, args.top_k)
        if args.csv:
            write_csv(args.csv, table)
            print(f"predict: top {args.top_k} of {len(paths)} image(s) -> {args.csv}")
        else:
            print_table(table)
    if problems:
        raise PipelineError(
            f"{len(problems)} input(s) could not be predicted:\n"
            + "\n".join(f"  - {problem}" for problem in problems)
        )
    return table


if __name__ == "__main__":
    console.run(main)
