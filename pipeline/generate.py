"""Run: `python -m pipeline.generate` (DVC stage `generate`; settings in params.yaml `generate`).

Writes a seeded synthetic leaf dataset to data/synthetic in the Kaggle "Classify Leaves" layout:
train.csv (image,label), test.csv (image), sample_submission.csv (image,label) and images/N.jpg,
numbered by one running index over train and test images in seeded random order.

Species differ only in shape: outline (ovate, elliptic, lanceolate, cordate, 3/5/7-lobed),
margin (entire, finely serrate, coarsely dentate), aspect ratio (broad, narrow) and venation
(sparse or dense pinnate, palmate). Colour comes from a small palette shared by several species,
so it does not identify a species. Every image varies in rotation, scale, position, lighting,
background, shape jitter and petiole. Image N is drawn from its own random stream seeded by
(seed, N), so the same parameters always give byte-identical files.
"""

from __future__ import annotations

import argparse
import colorsys
import itertools
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageChops, ImageDraw

from pipeline.cli import run
from pipeline.config import GenerateParams, load_params
from pipeline.files import SYNTHETIC_DIR, atomic_path, write_csv

# Trait tables. Outline: leaf width / length before the aspect factor.
OUTLINE_WIDTH = {
    "ovate": 0.62,
    "elliptic": 0.5,
    "lanceolate": 0.3,
    "cordate": 0.72,
    "three_lobed": 1.0,
    "five_lobed": 1.0,
    "seven_lobed": 1.0,
}
# Width profile t**a * (1 - t)**b along the midrib: widest at a / (a + b) of the length.
PROFILE_EXPONENTS = {"ovate": (0.55, 1.0), "elliptic": (0.75, 0.75), "lanceolate": (0.5, 1.5)}
LOBES = {"three_lobed": 3, "five_lobed": 5, "seven_lobed": 7}
LOBE_SPAN_DEG = {3: 50.0, 5: 72.0, 7: 96.0}  # angle of the outermost lobe from the midrib
# Margin: (tooth spacing, tooth depth) in units of the leaf length; spacing 0 means entire.
MARGINS = {"entire": (0.0, 0.0), "serrate": (0.075, 0.035), "dentate": (0.17, 0.075)}
ASPECTS = {"broad": 1.0, "narrow": 0.6}
# Venation: (kind, number of side-vein pairs for pinnate; palmate veins follow the outline).
VENATIONS = {
    "sparse_pinnate": ("pinnate", 3),
    "dense_pinnate": ("pinnate", 7),
    "palmate": ("palmate", 5),
}
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
OUTLINE_POINTS = 1024
JPEG_OPTIONS = {"quality": 90, "subsampling": 2, "optimize": False}  # 2 = 4:2:0


@dataclass(frozen=True)
class Species:
    """One class: its label and the traits every image of it is drawn with."""

    name: str
    outline: str
    margin: str
    aspect: str
    venation: str
    hsv: tuple[float, float, float]


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


# --- Leaf geometry, in leaf units: petiole attachment at the origin, tip near (0, 1). ---


def _profile_outline(outline: str) -> np.ndarray:
    """A simple leaf of unit length and unit width, counter-clockwise from the base."""
    a, b = PROFILE_EXPONENTS[outline]
    t = (1 - np.cos(np.linspace(0, np.pi, OUTLINE_POINTS // 2))) / 2  # dense at base and tip
    w = t**a * (1 - t) ** b
    w /= 2 * w.max()
    right = np.column_stack([w, t])
    left = np.column_stack([-w[::-1], t[::-1]])[1:-1]
    return np.concatenate([right, left])


def _cordate_outline() -> np.ndarray:
    """A heart: the classic heart curve upside down, its notch at the origin."""
    t = np.linspace(0, 2 * np.pi, OUTLINE_POINTS, endpoint=False)
    x = 16 * np.sin(t) ** 3
    y = 13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t)
    return np.column_stack([x / 32, (5 - y) / 22])[::-1]


def _lobe_angles(lobes: int) -> np.ndarray:
    span = np.radians(LOBE_SPAN_DEG[lobes])
    return np.linspace(-span, span, lobes)


def _lobed_outline(lobes: int) -> np.ndarray:
    """A palmately lobed leaf in polar form around the origin, the middle lobe pointing up."""
    theta = np.linspace(np.pi, -np.pi, OUTLINE_POINTS, endpoint=False)  # from +y, clockwise
    centres = _lobe_angles(lobes)
    step = centres[1] - centres[0]
    nearest = centres[np.clip(np.round((theta - centres[0]) / step), 0, lobes - 1).astype(int)]
    u = np.clip(np.abs(theta - nearest) / (step / 2), 0, 1)
    tip = 1 - 0.3 * (nearest / centres[-1]) ** 2  # side lobes are shorter
    sinus = 0.38
    r = sinus + (tip - sinus) * (1 - u**1.4) ** 1.1
    r *= 1 - 0.65 * np.exp(-(((np.abs(theta) - np.pi) / 0.3) ** 2))  # basal notch at the petiole
    return np.column_stack([-r * np.sin(theta), r * np.cos(theta)])


def _base_outline(species: Species) -> np.ndarray:
    if species.outline in LOBES:
        return _lobed_outline(LOBES[species.outline])
    if species.outline == "cordate":
        return _cordate_outline()
    return _profile_outline(species.outline)


def _resample(poly: np.ndarray, n: int) -> tuple[np.ndarray, float]:
    """`n` points evenly spaced along the closed polygon, and its perimeter."""
    closed = np.vstack([poly, poly[:1]])
    s = np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(closed, axis=0).T))])
    q = np.linspace(0, s[-1], n, endpoint=False)
    return np.column_stack([np.interp(q, s, closed[:, 0]), np.interp(q, s, closed[:, 1])]), s[-1]


def _outward_normals(poly: np.ndarray) -> np.ndarray:
    tangent = np.roll(poly, -1, axis=0) - np.roll(poly, 1, axis=0)
    normal = np.column_stack([tangent[:, 1], -tangent[:, 0]])
    normal /= np.linalg.norm(normal, axis=1, keepdims=True) + 1e-12
    x, y = poly.T
    area = np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))
    return normal if area > 0 else -normal


def _jittered_margin(
    poly: np.ndarray, margin: str, lobed: bool, rng: np.random.Generator
) -> np.ndarray:
    """Resample the outline, wobble it a little and cut the teeth of `margin` into it."""
    pts, perimeter = _resample(poly, OUTLINE_POINTS)
    s = np.arange(OUTLINE_POINTS) / OUTLINE_POINTS
    wobble = sum(
        rng.normal(0, 0.012) * np.sin(2 * np.pi * k * s + rng.uniform(0, 2 * np.pi))
        for k in range(2, 6)
    )
    centre = pts.mean(axis=0)
    pts = centre + (pts - centre) * (1 + wobble)[:, None]
    noise = rng.normal(0, 0.002, pts.shape)  # added last: it would garble the normals
    spacing, depth = MARGINS[margin]
    if spacing == 0:
        return pts + noise
    if lobed:  # narrow lobes only fit smaller teeth
        spacing, depth = spacing * 0.7, depth * 0.6
    phase = s * perimeter / (spacing * rng.uniform(0.9, 1.1))
    tooth = np.floor(phase).astype(int)
    f = phase - tooth
    rise = 0.75 if margin == "serrate" else 0.5  # serrate teeth lean, dentate teeth are symmetric
    profile = np.where(f < rise, f / rise, (1 - f) / (1 - rise))
    depths = depth * rng.uniform(0.75, 1.25, tooth.max() + 1)[tooth]
    if not lobed:  # teeth shrink where the blade narrows (tip, base), or they would cut through
        depths = np.minimum(depths, 0.4 * np.abs(pts[:, 0]))
    near_base = np.clip((np.hypot(*pts.T) - 0.12) / 0.12, 0, 1)  # no teeth at the petiole
    return pts + _outward_normals(pts) * (depths * (profile - 1) * near_base)[:, None] + noise


def _veins(species: Species) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Main and side vein polylines in unit-width leaf units (clipped to the blade later)."""
    kind, pairs = VENATIONS[species.venation]
    if kind == "palmate":
        angles = (
            _lobe_angles(LOBES[species.outline])
            if species.outline in LOBES
            else np.radians([-70.0, -35.0, 0.0, 35.0, 70.0])
        )
        u = np.linspace(0, 1.4, 8)[:, None]
        return [u * np.array([np.sin(a), np.cos(a)]) for a in angles], []
    side_veins = []
    u = np.linspace(0, 1, 6)
    for y0 in np.linspace(0.1, 0.78, pairs):
        for side in (-1, 1):
            x = side * u * 0.9 * np.sin(np.radians(55))
            y = y0 + u * 0.9 * np.cos(np.radians(55)) + 0.1 * u**2  # curving towards the tip
            side_veins.append(np.column_stack([x, y]))
    return [np.array([[0.0, 0.0], [0.0, 0.97]])], side_veins


def _leaf_shapes(species: Species, rng: np.random.Generator) -> dict[str, list[np.ndarray]]:
    """The outline, a shrunken copy that clips the veins, the veins and the petiole."""
    width = OUTLINE_WIDTH[species.outline] * ASPECTS[species.aspect] * rng.uniform(0.92, 1.08)
    scale = np.array([width, 1.0])
    outline = _jittered_margin(
        _base_outline(species) * scale, species.margin, species.outline in LOBES, rng
    )
    centre = outline.mean(axis=0)
    clip = centre + (outline - centre) * 0.9
    main_veins, side_veins = _veins(species)
    length = rng.uniform(0.1, 0.22) - min(outline[:, 1].min(), 0)  # out of a basal notch
    y = -np.linspace(0, length, 8)
    petiole = np.column_stack([rng.uniform(-1.5, 1.5) * y**2, y])
    bend = rng.uniform(-0.12, 0.12)  # a slightly curved midrib
    shapes = {
        "outline": [outline],
        "clip": [clip],
        "main_veins": [v * scale for v in main_veins],
        "side_veins": [v * scale for v in side_veins],
        "petiole": [petiole],
    }
    return {
        key: [p + np.outer(bend * p[:, 1] ** 2, [1, 0]) for p in parts]
        for key, parts in shapes.items()
    }


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


# --- Pixels: background, colour, lighting and noise, vectorised over the image. ---


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


def main(argv: list[str] | None = None) -> None:
    """Generate data/synthetic from the `generate` group of params.yaml."""
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args(argv)
    params = load_params().generate
    generate_dataset(SYNTHETIC_DIR, params)
    n_test = held_out_per_species(params) * params.num_species
    n_train = params.images_per_species * params.num_species - n_test
    print(
        f"generated {params.num_species} species, {n_train} train + {n_test} test images "
        f"({params.image_size}px) in {SYNTHETIC_DIR}"
    )


if __name__ == "__main__":
    run(main)
