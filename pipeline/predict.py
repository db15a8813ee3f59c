"""Predict the species of new images with every trained model and fold, as the ensemble does.

    python -m pipeline.predict PATH... [--top-k 5] [--csv OUT.csv]

PATHs are image files or folders (searched recursively for image files). Every cell of
train.models × train.folds that has a models/<model>/fold<k>/best.pt is used (a missing one is
skipped with a warning). Each model is rebuilt from its checkpoint (backbone, classes, model
params), sees the images through its own eval transforms and TTA views, and the logits are
averaged like stage `ensemble`: over a model's folds, then over models, in the space of
`ensemble.average` and with the model weights it chose (results/ensemble/metrics.json),
renormalised over the networks: stage meta's regression (meta.enabled) is not saved as a model,
so it takes no part here.

Prints the top-k species and their probabilities per image, or with `--csv` writes them as a
long table: `image,rank,label,probability`, k rows per image, rank 1 first. Files that cannot be
read are listed after the predictions of the others, and the exit code is then 2.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from pipeline.cli import PipelineError, progress, run
from pipeline.config import ModelParams, Params, load_params
from pipeline.data import (
    ImageReadError,
    LeafDataset,
    build_transforms,
    create_loader,
    load_image,
    loader_kwargs,
)
from pipeline.ensemble import average, log_softmax
from pipeline.files import CHECKPOINT_NAME, ENSEMBLE_METRICS, fold_dir, read_json, write_csv
from pipeline.models import create_model
from pipeline.train import amp_context, resolve_device
from pipeline.train import predict as predict_logits

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")


@dataclass(frozen=True)
class Cell:
    """One trained (model, fold) checkpoint."""

    model: str
    fold: int
    path: Path


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.predict",
        description="Predict the species of images with the trained ensemble.",
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders")
    parser.add_argument("--top-k", type=int, default=5, help="species to list per image")
    parser.add_argument("--csv", type=Path, help="write image,rank,label,probability here")
    args = parser.parse_args(argv)
    if args.top_k < 1:
        parser.error("--top-k must be at least 1")
    return args


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


def readable_images(paths: list[Path], min_side: int) -> tuple[list[Path], list[str]]:
    """Split `paths` into images that decode and messages for those that do not."""
    good, problems = [], []
    for path in progress(paths, desc="check images", unit="img", leave=False):
        try:
            load_image(path, min_side=min_side)
            good.append(path)
        except ImageReadError as err:
            problems.append(str(err))
    return good, problems


def find_cells(params: Params) -> list[Cell]:
    """The trained cells of train.models × train.folds; warn about missing ones on stderr."""
    cells, missing = [], []
    for model in params.train.models:
        for fold in params.train.folds:
            path = fold_dir(model, fold) / CHECKPOINT_NAME
            (cells if path.is_file() else missing).append(Cell(model, fold, path))
    for cell in missing:
        print(
            f"warning: {cell.path} not found; skipping {cell.model} fold {cell.fold}",
            file=sys.stderr,
        )
    if not cells:
        raise PipelineError(
            "no trained model: none of "
            + ", ".join(str(cell.path) for cell in missing)
            + " exists; run `dvc repro` first"
        )
    return cells


def load_checkpoint(path: Path) -> dict:
    """A checkpoint written by stage `train`, on the CPU, without running pickled code."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a truncated or foreign file
        raise PipelineError(f"{path}: cannot load the checkpoint ({err})") from None


@torch.no_grad()
def predict_cell(
    checkpoint: dict, paths: list[Path], params: Params, device: torch.device, desc: str
) -> np.ndarray:
    """One checkpoint's logits for `paths`, averaged over its TTA views.

    Args:
        checkpoint: as stage `train` saves it (backbone, classes, model_params, state_dict).
        paths: readable image files.
        params: for the loader's workers and seed.
        device: where the model runs.
        desc: the progress bar's label.

    Returns:
        Logits, (len(paths), number of classes), in `paths` order.
    """
    hp = ModelParams.model_validate(checkpoint["model_params"])
    model = create_model(
        checkpoint["backbone"], len(checkpoint["classes"]), False, drop_rate=hp.drop_rate
    )
    model.load_state_dict(checkpoint["state_dict"])
    model.to(device).eval()
    dataset = LeafDataset(
        [str(p) for p in paths],
        None,
        build_transforms(hp, train=False),
        hp.image_size,
        seed=params.base.seed,
    )
    loader = create_loader(
        dataset,
        2 * hp.batch_size,
        train=False,
        seed=params.base.seed,
        **loader_kwargs(params.train.loader, device),
    )
    autocast, _ = amp_context(device, hp.amp)
    return predict_logits(model, loader, autocast, device, hp.tta, desc)


def predict_images(
    paths: list[Path], cells: list[Cell], params: Params
) -> tuple[np.ndarray, list[str]]:
    """Ensemble logits for `paths` over `cells`, and the class names they index.

    Checkpoints are loaded one at a time, so memory holds one model whatever the ensemble size.
    """
    device = resolve_device(params.train.device)
    space = params.ensemble.average
    by_model: dict[str, list[np.ndarray]] = {}
    classes = None
    for cell in cells:
        checkpoint = load_checkpoint(cell.path)
        if classes is None:
            classes = checkpoint["classes"]
        elif checkpoint["classes"] != classes:
            raise PipelineError(
                f"{cell.path} was trained on other classes than {cells[0].path}; "
                "run `dvc repro` to retrain every cell on the current data"
            )
        desc = f"{cell.model} fold {cell.fold}"
        by_model.setdefault(cell.model, []).append(
            predict_cell(checkpoint, paths, params, device, desc)
        )
    model_logits = [average(logits, space) for logits in by_model.values()]
    return average(model_logits, space, ensemble_weights(list(by_model))), classes


def ensemble_weights(models: list[str]) -> list[float] | None:
    """The model weights stage `ensemble` chose, renormalised over `models`.

    Returns:
        None (weigh the models alike) when results/ensemble/metrics.json is missing, lacks one
        of `models`, or gives them all weight 0.
    """
    if not ENSEMBLE_METRICS.is_file():
        return None
    chosen = read_json(ENSEMBLE_METRICS).get("weights", {})
    if not all(model in chosen for model in models):
        return None
    weights = np.array([chosen[model] for model in models], dtype=np.float64)
    return (weights / weights.sum()).tolist() if weights.sum() > 0 else None


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
    args = parse_args(argv)
    params = load_params()
    cells = find_cells(params)
    paths, problems = find_images(args.paths)
    min_side = min(params.train.for_model(cell.model).image_size for cell in cells)
    paths, unreadable = readable_images(paths, min_side)
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
    run(main)
