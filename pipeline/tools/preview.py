"""Show what an augmentation policy does: a grid of augmented draws of the prepared images.

    leaf preview [--model NAME] [--split train|eval] [--images 8] [--samples 6]
                 [--out results/augment_grid.png]

Rows are images of data/prepared/train.csv, the first of each class in class order (up to
--images). The first column is the image as fitted to the model's `image_size` without
augmentation; the next --samples columns are draws of its `augment.<split>` list (train.defaults
merged with train.models.<model>), denormalised to what the network is shown before
normalisation. The draws are seeded by `base.seed`, so the same settings give the same grid.
Once stage cache has measured whether the leaves stand upright, the list is the one training
uses (`augment.upright`, pipeline.data.orientation).
A tool outside the DAG, like `leaf predict`; it needs `dvc repro prepare` to have run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image, ImageDraw, ImageFont

from pipeline.config.model_settings import AugmentParams, ModelParams
from pipeline.config.params import load_params
from pipeline.config.paths import AUGMENT_GRID, CACHE_ORIENTATION, PREPARED_TRAIN
from pipeline.config.schema import Params
from pipeline.data.loaders import LeafDataset
from pipeline.data.orientation import orient_settings, read_orientation
from pipeline.data.tables import read_input_table
from pipeline.data.transforms import IMAGENET_MEAN, IMAGENET_STD, build_transforms
from pipeline.io import console
from pipeline.io.console import PipelineError, command_parser, positive_int
from pipeline.io.files import atomic_path, check_writable

MIN_CELL = 128  # small images are enlarged (nearest neighbour: pixels stay visible) to this
GAP = 4


FONT_SIZE = 14


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="a key of train.models (default: the first)")
    parser.add_argument("--split", choices=("train", "eval"), default="train")
    parser.add_argument("--images", type=positive_int, default=8, help="rows: one image per class")
    parser.add_argument("--samples", type=positive_int, default=6, help="augmented draws per image")
    parser.add_argument(
        "--out", type=Path, default=AUGMENT_GRID, help="the image to write (.png, .jpg, ...)"
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    return command_parser("leaf preview", __doc__, add_arguments).parse_args(argv)


def model_settings(params: Params, model: str | None) -> tuple[str, ModelParams]:
    """The model's name (the first of train.models by default) and its merged settings,
    oriented as stage train orients them once stage cache has measured the leaves."""
    model = model or next(iter(params.train.models))
    if model not in params.train.models:
        raise PipelineError(
            f"--model {model!r} is not a key of train.models ({', '.join(params.train.models)})"
        )
    hp = params.train.for_model(model)
    if not CACHE_ORIENTATION.exists():
        if hp.augment.upright == "auto":
            print(
                f"preview: {CACHE_ORIENTATION} not found (dvc repro cache measures it), so "
                "augment.upright: auto leaves the list as written",
                file=sys.stderr,
            )
        return model, hp
    hp, note = orient_settings(hp, read_orientation(CACHE_ORIENTATION))
    if note:
        print(f"preview: {note}", file=sys.stderr)
    return model, hp


def pick_images(count: int) -> pd.DataFrame:
    """The first row of each class in data/prepared/train.csv, in class order, at most `count`."""
    table = read_input_table(PREPARED_TRAIN, ("path", "target"))  # names the file and the stage
    return table.drop_duplicates("target").sort_values("target").head(count)


def to_pixels(image: torch.Tensor) -> np.ndarray:
    """A normalised (3, H, W) tensor back to an (H, W, 3) uint8 image."""
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    pixels = (image * std + mean).clamp(0, 1) * 255
    return pixels.round().byte().permute(1, 2, 0).numpy()


def render_rows(
    paths: list[str], hp: ModelParams, split: str, samples: int, seed: int
) -> list[list[np.ndarray]]:
    """Per image: the fitted original, then `samples` draws of the `split` augmentation.

    Args:
        paths: image files.
        hp: the model's merged settings (image_size, keep_aspect, crop_to_leaf, augment).
        split: `train` or `eval`, the augment list to draw from.
        samples: draws per image; draw k is the image's augmentation in epoch k.
        seed: `base.seed`, as training seeds its datasets.
    """
    plain = build_transforms(hp.model_copy(update={"augment": AugmentParams()}), train=False)
    augmented = build_transforms(hp, train=split == "train")
    crop = hp.crop_to_leaf
    originals = LeafDataset(paths, None, plain, hp.image_size, seed=seed, crop_to_leaf=crop)
    draws = LeafDataset(paths, None, augmented, hp.image_size, seed=seed, crop_to_leaf=crop)
    return [
        [to_pixels(originals[i][0])] + [to_pixels(draws[(i, k)][0]) for k in range(samples)]
        for i in range(len(paths))
    ]


def compose_grid(
    rows: list[list[np.ndarray]], labels: list[str], headers: list[str], title: str
) -> Image.Image:
    """Lay images out in a grid on white, the title and column headers above, labels left.

    Args:
        rows: equally many same-sized (H, W, 3) uint8 images per row.
        labels: one per row, written in the left margin.
        headers: one per column.
        title: the line above the headers.
    """
    font = ImageFont.load_default(size=FONT_SIZE)
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    text_width = max(measure.textlength(text, font=font) for text in labels)
    line = FONT_SIZE + 2 * GAP
    cell = max(MIN_CELL, *rows[0][0].shape[:2])
    left, top = int(text_width) + 3 * GAP, 2 * line
    width = max(left + len(headers) * (cell + GAP), measure.textlength(title, font=font) + GAP)
    grid = Image.new("RGB", (int(width), top + len(rows) * (cell + GAP)), "white")
    draw = ImageDraw.Draw(grid)
    draw.text((GAP, GAP), title, fill="black", font=font)
    for column, header in enumerate(headers):
        draw.text((left + column * (cell + GAP), line + GAP), header, fill="black", font=font)
    for row, (images, label) in enumerate(zip(rows, labels, strict=True)):
        y = top + row * (cell + GAP)
        draw.text((GAP, y + cell // 2 - FONT_SIZE // 2), label, fill="black", font=font)
        for column, image in enumerate(images):
            tile = Image.fromarray(image).resize((cell, cell), Image.Resampling.NEAREST)
            grid.paste(tile, (left + column * (cell + GAP), y))
    return grid


def main(argv: list[str] | None = None) -> Path:
    return run(parse_args(argv))


def image_format(path: Path) -> str:
    """The Pillow format `path`'s suffix names (.png: PNG, .jpg: JPEG), checked to be writable."""
    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt not in Image.SAVE:
        raise PipelineError(f"--out {path}: no image format to write as {path.suffix!r}; use .png")
    return fmt


def run(args: argparse.Namespace) -> Path:
    check_writable(args.out, "--out")
    fmt = image_format(args.out)
    params = load_params()
    model, hp = model_settings(params, args.model)
    picked = pick_images(args.images)
    rows = render_rows(list(picked["path"]), hp, args.split, args.samples, params.base.seed)
    policy = getattr(hp.augment, args.split)
    title = (
        f"{model}: augment.{args.split} "
        f"({', '.join(spec.name for spec in policy) or 'no transforms'}), {hp.image_size} px"
    )
    headers = ["fitted"] + [f"{args.split} #{k + 1}" for k in range(args.samples)]
    grid = compose_grid(rows, list(picked["label"]), headers, title)
    with atomic_path(args.out) as tmp:
        grid.save(tmp, format=fmt)
    print(
        f"preview: {len(rows)} image(s) x {args.samples} draw(s) of {model}'s "
        f"augment.{args.split} -> {args.out}"
    )
    return args.out


if __name__ == "__main__":
    console.run(main)
