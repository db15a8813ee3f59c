"""Predict the species of new images with every trained model and fold, as the ensemble does.

    leaf predict PATH... [--top-k 5] [--csv OUT.csv]

PATHs are image files or folders (searched recursively for image files). Every cell of
train.models × train.folds that has a models/<model>/fold<k>/best.pt is used (a missing one is
skipped with a warning). Each model is rebuilt from its checkpoint (backbone, classes, model
params; `checkpoint.load_trained`, as stage pseudo does) and sees the images as training's
test loader does: its own eval transforms, uint8 batches normalised on the device
(loaders.DeviceLoader), its TTA views. With `meta.enabled`, stage meta's regression of every
fold (models/meta/fold<k>/model.pkl) predicts from the images' statistics
(features.image_features) as one more model. The logits are averaged like stage `ensemble`:
over a model's folds, then over models, in the space of `ensemble.average` and with the model
weights it chose (results/ensemble/metrics.json), renormalised over the models present; so the
images of the test set get the ensemble's test logits, the ones the submission was made with.

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

from pipeline import console, meta_model
from pipeline.checkpoint import load_checkpoint, load_trained, trained_settings
from pipeline.console import PipelineError, command_parser, positive_int, progress
from pipeline.device import amp_context, resolve_device, use_channels_last
from pipeline.features import feature_table
from pipeline.files import check_writable, read_json, write_csv
from pipeline.images import ImageReadError, load_image
from pipeline.loaders import DeviceLoader, LeafDataset, create_loader, loader_kwargs
from pipeline.params import load_params
from pipeline.paths import CHECKPOINT_NAME, CLASSES_FILE, ENSEMBLE_METRICS, META_DIR, fold_dir
from pipeline.schema import META_MODEL, Params
from pipeline.scoring import average, log_softmax
from pipeline.transforms import build_transforms
from pipeline.tta import predict_logits

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")


@dataclass(frozen=True)
class Cell:
    """One trained (model, fold) checkpoint."""

    model: str
    fold: int
    path: Path


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


def find_meta(params: Params, num_classes: int) -> list[meta_model.FoldModel]:
    """Stage meta's fitted regressions of train.folds when meta.enabled (else none); warn about
    folds it saved none for (a models/meta/ from before it saved them: `dvc repro meta`)."""
    if not params.meta.enabled:
        return []
    saved = {fold: meta_model.load_fold_model(fold) for fold in params.train.folds}
    models = [model for model in saved.values() if model is not None]
    for fold in (fold for fold, model in saved.items() if model is None):
        print(
            f"warning: {META_DIR}/fold{fold} has no saved regression; skipping meta fold {fold} "
            "(run `dvc repro meta` to save it)",
            file=sys.stderr,
        )
    for model in models:
        if model.num_classes != num_classes or model.groups != models[0].groups:
            raise PipelineError(
                f"{META_DIR}: its folds were fitted on other classes or features than the "
                "networks; run `dvc repro` to refit stage meta on the current data"
            )
    return models


@torch.no_grad()
def predict_cell(
    cell: Cell,
    checkpoint: dict,
    paths: list[Path],
    params: Params,
    classes: list[str],
    device: torch.device,
) -> np.ndarray:
    """One checkpoint's logits for `paths`, averaged over its TTA views.

    The network is rebuilt and fed as stage train's test loader feeds it (`build_loaders`):
    the checkpoint's own settings, uint8 images normalised on the device by a DeviceLoader,
    in batches of twice its batch size.

    Args:
        cell: the (model, fold) cell.
        checkpoint: its best.pt, as stage `train` saves it (`load_checkpoint`).
        paths: readable image files.
        params: for the loader's workers, the seed and train.channels_last.
        classes: the class names the network must have been trained on.
        device: where the model runs.

    Returns:
        Logits, (len(paths), number of classes), in `paths` order.
    """
    hp = trained_settings(checkpoint, cell.path)
    model = load_trained(cell.model, cell.fold, hp, classes, checkpoint).to(device).eval()
    channels_last = use_channels_last(params.train.channels_last, device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    dataset = LeafDataset(
        [str(p) for p in paths],
        None,
        build_transforms(hp, train=False, normalize=False),
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
    desc = f"{cell.model} fold {cell.fold}"
    return predict_logits(
        model, DeviceLoader(loader, device, channels_last), autocast, device, hp.tta, desc
    )


def predict_images(
    paths: list[Path], cells: list[Cell], params: Params
) -> tuple[np.ndarray, list[str]]:
    """Ensemble logits for `paths` over `cells` (and stage meta's folds, when meta.enabled),
    and the class names they index.

    Checkpoints are loaded one at a time, so memory holds one model whatever the ensemble size.
    """
    device = resolve_device(params.train.device)
    space = params.ensemble.average
    classes = read_json(CLASSES_FILE) if CLASSES_FILE.is_file() else None
    by_model: dict[str, list[np.ndarray]] = {}
    for cell in cells:
        checkpoint = load_checkpoint(cell.path)
        if classes is None:
            classes = checkpoint.get("classes")
        by_model.setdefault(cell.model, []).append(
            predict_cell(cell, checkpoint, paths, params, classes, device)
        )
    model_logits = {model: average(logits, space) for model, logits in by_model.items()}
    folds = find_meta(params, len(classes))
    if folds:
        print(
            f"predict: and stage meta's regression of {len(folds)} fold(s) on "
            f"{', '.join(folds[0].groups)} features",
            file=sys.stderr,
        )
        features = feature_table(pd.Series([str(p) for p in paths]), folds[0].groups)
        model_logits[META_MODEL] = meta_model.predict(folds, features, space)
    weights = ensemble_weights(list(model_logits))
    return average(list(model_logits.values()), space, weights), classes


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
    return run(parse_args(argv))


def run(args: argparse.Namespace) -> pd.DataFrame:
    if args.csv:
        check_writable(args.csv, "--csv")
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
    console.run(main)
