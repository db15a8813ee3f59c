"""Image statistics for stage meta, one row per image: size, object shape and contour
descriptors, outline curvature and its pairs across scales, colour; the groups measured on the
leaf's area (discs, widths and rings: pipeline.ensemble.region_features); and inside its blade
(veins and colour: pipeline.ensemble.blade_features)."""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import pandas as pd

from pipeline.data.images import load_image
from pipeline.ensemble.blade_features import BLADE_FEATURES, blade_features
from pipeline.ensemble.contours import (
    largest_contour,
    object_mask,
    resample_contour,
    turning_angles,
)
from pipeline.ensemble.region_features import (
    DISC_FEATURES,
    RINGS_FEATURES,
    WIDTHS_FEATURES,
    disc_features,
    ring_features,
    width_features,
)
from pipeline.io.console import progress

SIZE_FEATURES = ("log_width", "log_height", "log_aspect")
CONTOUR_FEATURES = (
    "solidity",
    "log_hull_perimeter_ratio",
    "log_elongation",
    "log_roughness",
    "polygon_vertices",
)
AREA_FEATURES = ("log_object_area", "object_share", "log_outline", "outline_per_sqrt_area")
SHAPE_FEATURES = (*AREA_FEATURES, *CONTOUR_FEATURES)
# The outline group: the contour resampled at OUTLINE_POINTS points equally spaced along it;
# at each scale s, the turning angle between the chords to the points s before and s after
# (s / OUTLINE_POINTS of the perimeter: 1/512, a margin tooth, up to 1/16, a lobe).
OUTLINE_POINTS = 512
OUTLINE_SCALES = (1, 2, 4, 8, 16, 32)
OUTLINE_BINS = 12
OUTLINE_FEATURES = tuple(
    f"turn{scale}_{name}"
    for scale in OUTLINE_SCALES
    for name in [f"bin{b}" for b in range(OUTLINE_BINS)] + ["std", "mean_abs"]
)
# The turn_pairs group: how the turn at a fine scale goes with the turn around it at a coarser
# one (a tooth on a lobe's tip, or on a straight margin): per (fine, coarse) pair of scales, a
# TURN_PAIR_BINS x TURN_PAIR_BINS histogram of the two warped angles (as in `outline`).
TURN_PAIRS = ((1, 4), (4, 16), (2, 32))
TURN_PAIR_BINS = 6
TURN_PAIR_FEATURES = tuple(
    f"turns{fine}x{coarse}_bin{i}_{j}"
    for fine, coarse in TURN_PAIRS
    for i in range(TURN_PAIR_BINS)
    for j in range(TURN_PAIR_BINS)
)
COLOUR_FEATURES = tuple(f"{stat}_{channel}" for stat in ("mean", "std") for channel in "rgb")
# Each group's columns, in the order `image_features` gives them (`meta.features` names groups).
GROUP_COLUMNS = {
    "size": SIZE_FEATURES,
    "shape": SHAPE_FEATURES,
    "outline": OUTLINE_FEATURES,
    "turn_pairs": TURN_PAIR_FEATURES,
    "disc": DISC_FEATURES,
    "widths": WIDTHS_FEATURES,
    "rings": RINGS_FEATURES,
    "blade": BLADE_FEATURES,
    "colour": COLOUR_FEATURES,
}


def size_features(height: int, width: int) -> dict[str, float]:
    values = (math.log(width), math.log(height), math.log(width / height))
    return dict(zip(SIZE_FEATURES, values, strict=True))


def shape_features(mask: np.ndarray, contour: np.ndarray | None) -> dict[str, float]:
    """Area and outline length of the object in original pixels, and its outline's form
    (`contour`: the mask's largest outer contour, `largest_contour`)."""
    area = int(mask.sum())
    outline = int((mask[1:] != mask[:-1]).sum() + (mask[:, 1:] != mask[:, :-1]).sum())
    values = (
        math.log1p(area),
        area / mask.size,
        math.log1p(outline),
        outline / math.sqrt(area + 1),
    )
    return dict(zip(AREA_FEATURES, values, strict=True)) | contour_features(contour)


def contour_features(contour: np.ndarray | None) -> dict[str, float]:
    """Scale-free descriptors of the largest object's outer contour (zeros without an object).

    solidity: area over its convex hull's (lobes and notches lower it); log_hull_perimeter_ratio:
    how much longer the contour is than its hull; log_elongation: log of the ratio of the second
    moments' principal axes; log_roughness: how much longer the contour is than its polygon
    simplified to 1 % of its length (teeth and serrations); polygon_vertices: that polygon's
    corner count.
    """
    if contour is None:
        return dict.fromkeys(CONTOUR_FEATURES, 0.0)
    hull = cv2.convexHull(contour)
    perimeter = cv2.arcLength(contour, True)
    polygon = cv2.approxPolyDP(contour, 0.01 * perimeter, True)
    moments = cv2.moments(contour)
    spread = np.array([[moments["mu20"], moments["mu11"]], [moments["mu11"], moments["mu02"]]])
    minor, major = np.linalg.eigvalsh(spread)
    return {
        "solidity": cv2.contourArea(contour) / max(cv2.contourArea(hull), 1.0),
        "log_hull_perimeter_ratio": math.log(
            max(perimeter, 1.0) / max(cv2.arcLength(hull, True), 1.0)
        ),
        "log_elongation": math.log((major + 1.0) / (minor + 1.0)),
        "log_roughness": math.log(max(perimeter, 1.0) / max(cv2.arcLength(polygon, True), 1.0)),
        "polygon_vertices": float(len(polygon)),
    }


def warped(angles: np.ndarray) -> np.ndarray:
    """sign(a) * sqrt(|a| / pi), in [-1, 1]: spreads the many small angles of a smooth margin."""
    return np.sign(angles) * np.sqrt(np.abs(angles) / math.pi)


def outline_features(contour: np.ndarray | None) -> dict[str, float]:
    """Histograms of the outline's curvature at six scales, free of position, size and turn.

    Per scale: the share of points in each of OUTLINE_BINS bins of the `warped` angle, and the
    angles' standard deviation and mean magnitude. Zeros without an object.
    """
    if contour is None or len(contour) < 3:
        return dict.fromkeys(OUTLINE_FEATURES, 0.0)
    points = resample_contour(contour, OUTLINE_POINTS)
    values = []
    for scale in OUTLINE_SCALES:
        angles = turning_angles(points, scale)
        counts, _ = np.histogram(warped(angles), bins=OUTLINE_BINS, range=(-1.0, 1.0))
        values += [*(counts / len(angles)), angles.std(), np.abs(angles).mean()]
    return dict(zip(OUTLINE_FEATURES, map(float, values), strict=True))


def turn_pair_features(contour: np.ndarray | None) -> dict[str, float]:
    """Per pair of TURN_PAIRS: the joint histogram of the warped turning angles at the two
    scales, each bin the square root of its share of the OUTLINE_POINTS points (a Hellinger
    map, as in the disc group). Free of position, size and turn; zeros without an object."""
    if contour is None or len(contour) < 3:
        return dict.fromkeys(TURN_PAIR_FEATURES, 0.0)
    points = resample_contour(contour, OUTLINE_POINTS)
    values = []
    for fine, coarse in TURN_PAIRS:
        counts, _, _ = np.histogram2d(
            warped(turning_angles(points, fine)),
            warped(turning_angles(points, coarse)),
            bins=TURN_PAIR_BINS,
            range=[[-1.0, 1.0], [-1.0, 1.0]],
        )
        values += list(np.sqrt(counts.ravel() / len(points)))
    return dict(zip(TURN_PAIR_FEATURES, map(float, values), strict=True))


def colour_features(rgb: np.ndarray) -> dict[str, float]:
    pixels = rgb.reshape(-1, 3) / 255
    means, stds = pixels.mean(axis=0), pixels.std(axis=0)
    return dict(zip(COLOUR_FEATURES, map(float, [*means, *stds]), strict=True))


# How each group is measured from the image, its object mask and that mask's largest contour.
MEASURES = {
    "size": lambda rgb, mask, contour: size_features(*rgb.shape[:2]),
    "shape": lambda rgb, mask, contour: shape_features(mask, contour),
    "outline": lambda rgb, mask, contour: outline_features(contour),
    "turn_pairs": lambda rgb, mask, contour: turn_pair_features(contour),
    "disc": lambda rgb, mask, contour: disc_features(mask, contour),
    "widths": lambda rgb, mask, contour: width_features(mask, contour),
    "rings": lambda rgb, mask, contour: ring_features(mask, contour),
    "blade": blade_features,
    "colour": lambda rgb, mask, contour: colour_features(rgb),
}
MASK_FREE_GROUPS = {"size", "colour"}


def image_features(path: str, groups: list[str]) -> dict[str, float]:
    """The `groups` of features of one image file, at its full resolution, in GROUP_COLUMNS'
    order; the object is found only when a group measures it."""
    rgb = load_image(path)
    mask = contour = None
    if set(groups) - MASK_FREE_GROUPS:
        mask = object_mask(rgb)
        contour = largest_contour(mask)
    features = {}
    for group in GROUP_COLUMNS:
        if group in groups:
            features |= MEASURES[group](rgb, mask, contour)
    return features


def feature_table(paths: pd.Series, groups: list[str], desc: str = "meta") -> pd.DataFrame:
    """One row of features per path, decoded in threads (PIL releases the GIL); `desc` labels
    the progress bar."""
    with ThreadPoolExecutor(os.cpu_count()) as pool:
        rows = pool.map(lambda path: image_features(path, groups), paths)
        rows = list(progress(rows, total=len(paths), desc=desc, unit="img"))
    return pd.DataFrame(rows)
