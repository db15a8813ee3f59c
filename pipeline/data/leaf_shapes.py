"""Leaf outlines, margins and veins for the synthetic dataset."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Outline: leaf width / length before the aspect factor.
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


OUTLINE_POINTS = 1024


@dataclass(frozen=True)
class Species:
    """One class: its label and the traits every image of it is drawn with."""

    name: str
    outline: str
    margin: str
    aspect: str
    venation: str
    hsv: tuple[float, float, float]


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
