"""The seeded synthetic leaf dataset: species, the image plan and the renderer."""

from __future__ import annotations

import colorsys
import itertools
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageChops, ImageDraw

from pipeline.config.schema import GenerateParams
from pipeline.data.leaf_shapes import (
    ASPECTS,
    MARGINS,
    OUTLINE_WIDTH,
    VENATIONS,
    Species,
    _leaf_shapes,
)
from pipeline.io.files import atomic_path, write_csv

# Leaf colours (HSV), shared round-robin by the species; per-image jitter makes them overlap.
PALETTE = ((0.27, 0.62, 0.52), (0.22, 0.68, 0.58), (0.33, 0.55, 0.42))
BACKGROUNDS = np.array(
    [
        [0.93, 0.93, 0.91],  # white paper
        [0.78, 0.78, 0.77],  # grey card
        [0.86, 0.80, 0.68],  # beige
        [0.68, 0.75, 0.82],  # blue-grey
        [0.24, 0.26, 0.29],  # dark slate
        [0.55, 0.40, 0.27],  # wood
    ],
    dtype=np.float32,
)


JPEG_OPTIONS = {"quality": 90, "subsampling": 2, "optimize": False}  # 2 = 4:2:0


def _rng(seed: int, *key: int) -> np.random.Generator:
    """An independent stream for `key` under `seed` (negative seeds are mapped to unsigned)."""
    return np.random.default_rng(np.random.SeedSequence(seed % 2**64, spawn_key=key))


def make_species(params: GenerateParams) -> list[Species]:
    """The `num_species` species: distinct trait combinations chosen by the seed.

    All combinations of outline, margin, aspect and venation are shuffled, then taken round-robin
    over the outlines, so a few species already differ in outline and none share all traits.

    Args:
        params: the `generate` parameters.

    Returns:
        Species in a seeded order; a smaller `num_species` gives a prefix of the same list.
    """
    combos = list(itertools.product(OUTLINE_WIDTH, MARGINS, ASPECTS, VENATIONS))
    shuffled = [combos[k] for k in _rng(params.seed, 0).permutation(len(combos))]
    seen: Counter[str] = Counter()
    rounds = []  # how many earlier combinations share this one's outline
    for outline, *_ in shuffled:
        rounds.append(seen[outline])
        seen[outline] += 1
    order = sorted(range(len(shuffled)), key=lambda i: (rounds[i], i))
    species = []
    for i, k in enumerate(order[: params.num_species]):
        outline, margin, aspect, venation = shuffled[k]
        name = f"{aspect}_{outline}_{margin}_{venation}"
        species.append(Species(name, outline, margin, aspect, venation, PALETTE[i % len(PALETTE)]))
    return species


def held_out_per_species(params: GenerateParams) -> int:
    """How many images of each species go to test.csv: round(n * test_share), 1 to n - 1."""
    n = params.images_per_species
    return min(max(1, round(n * params.test_share)), n - 1)


def plan_images(species: list[Species], params: GenerateParams) -> pd.DataFrame:
    """Every image in file order: columns `image`, `label`, `split` (train or test).

    Train and test images of all species are interleaved by one seeded shuffle, so the running
    image number says nothing about the species or the split.
    """
    n, n_test = params.images_per_species, held_out_per_species(params)
    rows = [(s.name, "test" if j < n_test else "train") for s in species for j in range(n)]
    order = _rng(params.seed, 1).permutation(len(rows))
    labels, splits = zip(*(rows[k] for k in order), strict=True)
    images = [f"images/{i}.jpg" for i in range(len(rows))]
    return pd.DataFrame({"image": images, "label": labels, "split": splits})


def generate_dataset(out_dir: Path, params: GenerateParams) -> None:
    """Write the whole dataset to `out_dir`, replacing it atomically.

    Everything is built in a temporary sibling that is renamed onto `out_dir` at the end, so a
    failed or killed run leaves either the previous dataset or none, never a partial one.

    Args:
        out_dir: the dataset folder, e.g. data/synthetic.
        params: the `generate` parameters.
    """
    species = make_species(params)
    by_name = {s.name: s for s in species}
    plan = plan_images(species, params)
    with atomic_path(out_dir) as tmp:
        (tmp / "images").mkdir(parents=True)
        for index, (image, label) in enumerate(zip(plan["image"], plan["label"], strict=True)):
            picture = render_image(by_name[label], params.image_size, _rng(params.seed, 2, index))
            picture.save(tmp / image, format="JPEG", **JPEG_OPTIONS)
        train = plan[plan["split"] == "train"]
        test = plan[plan["split"] == "test"]
        write_csv(tmp / "train.csv", train[["image", "label"]])
        write_csv(tmp / "test.csv", test[["image"]])
        first_class = min(by_name)
        write_csv(tmp / "sample_submission.csv", test[["image"]].assign(label=first_class))


def _place(shapes: dict[str, list[np.ndarray]], canvas: int, rng: np.random.Generator) -> float:
    """Rotate, scale and move all shapes onto the canvas in place; return pixels per leaf unit."""
    angle = rng.uniform(0, 2 * np.pi)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    for parts in shapes.values():
        parts[:] = [p @ rot.T for p in parts]
    body = np.vstack(shapes["outline"] + shapes["petiole"])
    lo, hi = body.min(axis=0), body.max(axis=0)
    scale = rng.uniform(0.45, 0.85) * canvas / (hi - lo).max()
    slack = (canvas - (hi - lo) * scale) / 2
    centre = canvas / 2 + rng.uniform(-0.9, 0.9, 2) * slack
    for parts in shapes.values():
        parts[:] = [(p - (lo + hi) / 2) * scale + centre for p in parts]
    return scale


def _rasterise(
    shapes: dict[str, list[np.ndarray]], unit: float, canvas: int, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Antialiased blade coverage and vein coverage at `size`, both in [0, 1]."""
    blade, clip, veins = (Image.new("L", (canvas, canvas), 0) for _ in range(3))
    ImageDraw.Draw(blade).polygon(shapes["outline"][0].ravel().tolist(), fill=255)
    ImageDraw.Draw(clip).polygon(shapes["clip"][0].ravel().tolist(), fill=255)
    draw = ImageDraw.Draw(veins)
    midrib = max(1, round(0.022 * unit))
    for key, width in (("main_veins", midrib), ("side_veins", max(1, round(midrib * 0.6)))):
        for vein in shapes[key]:
            draw.line(vein.ravel().tolist(), fill=255, width=width, joint="curve")
    veins = ImageChops.multiply(veins, clip)
    petiole = shapes["petiole"][0].ravel().tolist()
    for image in (blade, veins):
        ImageDraw.Draw(image).line(petiole, fill=255, width=round(midrib * 1.4), joint="curve")
    return tuple(
        np.asarray(im.resize((size, size), Image.Resampling.LANCZOS), dtype=np.float32) / 255
        for im in (blade, veins)
    )


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Low-frequency noise in about [-1, 1]: a random cells x cells grid, bicubic upsampled."""
    grid = rng.uniform(-1, 1, (cells, cells)).astype(np.float32)
    return np.asarray(Image.fromarray(grid).resize((size, size), Image.Resampling.BICUBIC))


def _gradient(rng: np.random.Generator, size: int) -> np.ndarray:
    """A linear ramp across the image in a random direction, about -0.7 to 0.7."""
    angle = rng.uniform(0, 2 * np.pi)
    yy, xx = (np.mgrid[0:size, 0:size].astype(np.float32) + 0.5) / size - 0.5
    return xx * np.cos(angle) + yy * np.sin(angle)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    base = BACKGROUNDS[rng.integers(len(BACKGROUNDS))] + rng.normal(0, 0.03, 3).astype(np.float32)
    texture = rng.uniform(0.02, 0.08) * _smooth_noise(rng, size, int(rng.integers(3, 10)))
    grain = rng.uniform(0.003, 0.02) * rng.standard_normal((size, size), dtype=np.float32)
    shade = 1 + texture + grain
    if rng.random() < 0.5:
        shade *= 1 + rng.uniform(0.1, 0.35) * _gradient(rng, size)
    return base * shade[..., None]


def _shifted(a: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """`a` moved by (dx, dy) pixels, filled with zeros."""
    out = np.zeros_like(a)
    h, w = a.shape
    out[max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = a[
        max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)
    ]
    return out


def _leaf_colours(species: Species, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Blade and vein RGB: the species' palette colour with per-image jitter."""
    h, s, v = species.hsv
    h = (h + rng.normal(0, 0.025)) % 1
    s = float(np.clip(s + rng.normal(0, 0.08), 0.2, 1))
    v = float(np.clip(v + rng.normal(0, 0.08), 0.2, 0.95))
    blade = np.array(colorsys.hsv_to_rgb(h, s, v), dtype=np.float32)
    vein = blade + rng.uniform(0.3, 0.55) * (np.array([0.9, 0.92, 0.65], np.float32) - blade)
    return blade, vein


def render_image(species: Species, size: int, rng: np.random.Generator) -> Image.Image:
    """Draw one photo-like RGB image of a leaf of `species`.

    Args:
        species: whose traits to draw.
        size: the side of the square image in pixels.
        rng: this image's own random stream; all randomness of the image comes from it.

    Returns:
        A `size` x `size` RGB image.
    """
    factor = 4 if size <= 64 else 3 if size <= 96 else 2  # supersampling for antialiasing
    shapes = _leaf_shapes(species, rng)
    unit = _place(shapes, size * factor, rng)
    alpha, vein = _rasterise(shapes, unit, size * factor, size)
    blade_rgb, vein_rgb = _leaf_colours(species, rng)
    leaf = blade_rgb * (1 + 0.08 * _smooth_noise(rng, size, 5))[..., None]
    leaf = leaf * (1 - vein[..., None]) + vein_rgb * vein[..., None]
    background = _background(rng, size)
    offset = np.round(rng.uniform(-0.03, 0.03, 2) * size).astype(int)
    background *= 1 - rng.uniform(0.1, 0.3) * _shifted(alpha, *offset)[..., None]  # shadow
    image = background * (1 - alpha[..., None]) + leaf * alpha[..., None]
    image = (image - 0.5) * rng.uniform(0.8, 1.2) + 0.5
    image *= rng.uniform(0.8, 1.15) * (1 + rng.uniform(0, 0.3) * _gradient(rng, size))[..., None]
    image += rng.uniform(0.005, 0.02) * rng.standard_normal(image.shape, dtype=np.float32)
    return Image.fromarray(np.clip(image * 255 + 0.5, 0, 255).astype(np.uint8))
