"""Image statistics for stage meta: size, object shape and contour descriptors, outline
curvature, the share of discs along the outline inside the leaf, colour."""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import pandas as pd

from pipeline.data.images import load_image
from pipeline.io.console import progress

# An object pixel differs from the background by more than this share of the grey range.
OBJECT_CONTRAST = 0.25
CONTOUR_FEATURES = (
    "solidity",
    "log_hull_perimeter_ratio",
    "log_elongation",
    "log_roughness",
    "polygon_vertices",
)
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

# The disc group (the integral area invariant): the object mask is resized so that the square
# root of the leaf's area is DISC_SCALE_PX pixels, whatever the scan's resolution; at each radius
# (a share of that length: a tooth up to a lobe) the share of a disc centred on each of
# DISC_POINTS outline points that lies inside the object: about 1/2 on a straight margin, less on
# a tip or tooth, more in a notch. Unlike a turning angle it hardly depends on how finely the
# outline was traced.
DISC_RADII = (0.05, 0.1, 0.2, 0.4)
DISC_SCALE_PX = 128
# A thread-thin object (a failed mask) has almost no area: its resized long side is capped here
# (8 x DISC_SCALE_PX: no leaf is that elongated) so that it cannot take gigabytes.
DISC_MAX_SIDE_PX = 1024
DISC_POINTS = 256
DISC_BINS = 12
DISC_FEATURES = tuple(
    f"disc{round(100 * radius)}_{name}"
    for radius in DISC_RADII
    for name in [f"bin{b}" for b in range(DISC_BINS)] + ["std", "mean"]
)


def size_features(height: int, width: int) -> dict[str, float]:
    return {
        "log_width": math.log(width),
        "log_height": math.log(height),
        "log_aspect": math.log(width / height),
    }


def object_mask(grey: np.ndarray) -> np.ndarray:
    """The pixels that differ from the border's median grey by more than OBJECT_CONTRAST."""
    border = np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])
    return np.abs(grey - np.median(border)) > OBJECT_CONTRAST * 255


def shape_features(mask: np.ndarray, contour: np.ndarray | None) -> dict[str, float]:
    """Area and outline length of the object in original pixels, and its outline's form
    (`contour`: the mask's largest outer contour, `largest_contour`)."""
    area = int(mask.sum())
    outline = int((mask[1:] != mask[:-1]).sum() + (mask[:, 1:] != mask[:, :-1]).sum())
    return {
        "log_object_area": math.log1p(area),
        "object_share": area / mask.size,
        "log_outline": math.log1p(outline),
        "outline_per_sqrt_area": outline / math.sqrt(area + 1),
        **contour_features(contour),
    }


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


def largest_contour(mask: np.ndarray) -> np.ndarray | None:
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    return max(contours, key=cv2.contourArea) if contours else None


def resample_contour(contour: np.ndarray, points: int) -> np.ndarray:
    """(points, 2) positions equally spaced along the closed contour's length."""
    xy = contour[:, 0, :].astype(np.float64)
    closed = np.vstack([xy, xy[:1]])
    along = np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(closed, axis=0).T))])
    at = np.linspace(0.0, along[-1], points, endpoint=False)
    return np.stack([np.interp(at, along, closed[:, 0]), np.interp(at, along, closed[:, 1])], 1)


def turning_angles(points: np.ndarray, scale: int) -> np.ndarray:
    """Signed angle (radians) between the chords from `scale` points before and to `scale` after."""
    ahead = np.roll(points, -scale, axis=0) - points
    behind = points - np.roll(points, scale, axis=0)
    cross = behind[:, 0] * ahead[:, 1] - behind[:, 1] * ahead[:, 0]
    return np.arctan2(cross, (behind * ahead).sum(axis=1))


def outline_features(contour: np.ndarray | None) -> dict[str, float]:
    """Histograms of the outline's curvature at six scales, free of position, size and turn.

    Per scale: the share of points in each of OUTLINE_BINS bins of sign(a) * sqrt(|a| / pi),
    the square root spreading the many small angles of a smooth margin over more bins, and the
    angles' standard deviation and mean magnitude. Zeros without an object.
    """
    if contour is None or len(contour) < 3:
        return dict.fromkeys(OUTLINE_FEATURES, 0.0)
    points = resample_contour(contour, OUTLINE_POINTS)
    values = []
    for scale in OUTLINE_SCALES:
        angles = turning_angles(points, scale)
        warped = np.sign(angles) * np.sqrt(np.abs(angles) / math.pi)
        counts, _ = np.histogram(warped, bins=OUTLINE_BINS, range=(-1.0, 1.0))
        values += [*(counts / len(angles)), angles.std(), np.abs(angles).mean()]
    return dict(zip(OUTLINE_FEATURES, map(float, values), strict=True))


def edge_points(points: np.ndarray) -> np.ndarray:
    """A closed outline's points moved half a pixel along their outward normals."""
    tangent = np.roll(points, -1, axis=0) - np.roll(points, 1, axis=0)
    normal = np.stack([tangent[:, 1], -tangent[:, 0]], axis=1)
    normal /= np.maximum(np.hypot(*normal.T), 1e-9)[:, None]
    x, y = points.T
    turning = np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y)  # twice the signed area
    return points + 0.5 * np.sign(turning) * normal


def disc_features(mask: np.ndarray, contour: np.ndarray | None) -> dict[str, float]:
    """Per radius of DISC_RADII: the histogram of the share of a disc around each outline point
    that lies inside the object, and the shares' standard deviation and mean. Each bin holds the
    square root of its share of the points (a Hellinger map: linear models separate histograms
    better so). Free of position, resolution and turn; zeros without an object."""
    if contour is None or len(contour) < 3:
        return dict.fromkeys(DISC_FEATURES, 0.0)
    x, y, width, height = cv2.boundingRect(contour)
    scale = min(
        DISC_SCALE_PX / math.sqrt(max(cv2.contourArea(contour), 1.0)),
        DISC_MAX_SIDE_PX / max(width, height),
    )
    margin = math.ceil(max(DISC_RADII) * DISC_SCALE_PX) + 2
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    crop = mask[y : y + height, x : x + width].astype(np.float32)
    inside_leaf = cv2.copyMakeBorder(
        cv2.resize(crop, size, interpolation=cv2.INTER_AREA),
        *(margin,) * 4,
        cv2.BORDER_CONSTANT,
        value=0,
    )
    # The contour runs through the centres of the object's border pixels, half a pixel inside
    # its edge: move each point out by that, so the shares do not depend on the resolution.
    along = edge_points(resample_contour(contour, DISC_POINTS)) - [x, y]
    # cv2.resize maps pixel centres: a source pixel x lands at (x + 0.5) * scale - 0.5
    points = ((along + 0.5) * scale - 0.5 + margin).astype(np.float32)
    values = []
    for radius in DISC_RADII:
        side = 2 * round(radius * DISC_SCALE_PX) + 1
        disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (side, side)).astype(np.float32)
        inside = cv2.filter2D(inside_leaf, -1, disc / disc.sum(), borderType=cv2.BORDER_CONSTANT)
        shares = cv2.remap(inside, points[:, :1], points[:, 1:], cv2.INTER_LINEAR)[:, 0]
        counts, _ = np.histogram(shares, bins=DISC_BINS, range=(0.0, 1.0))
        values += [*np.sqrt(counts / len(shares)), shares.std(), shares.mean()]
    return dict(zip(DISC_FEATURES, map(float, values), strict=True))


def colour_features(rgb: np.ndarray) -> dict[str, float]:
    pixels = rgb.reshape(-1, 3) / 255
    means, stds = pixels.mean(axis=0), pixels.std(axis=0)
    return {
        **{f"mean_{channel}": float(value) for channel, value in zip("rgb", means, strict=True)},
        **{f"std_{channel}": float(value) for channel, value in zip("rgb", stds, strict=True)},
    }


def image_features(path: str, groups: list[str]) -> dict[str, float]:
    """The `groups` of features of one image file, at its full resolution."""
    rgb = load_image(path)
    features = {}
    if "size" in groups:
        features |= size_features(*rgb.shape[:2])
    if {"shape", "outline", "disc"} & set(groups):
        mask = object_mask(rgb.mean(axis=2))
        contour = largest_contour(mask)
    if "shape" in groups:
        features |= shape_features(mask, contour)
    if "outline" in groups:
        features |= outline_features(contour)
    if "disc" in groups:
        features |= disc_features(mask, contour)
    if "colour" in groups:
        features |= colour_features(rgb)
    return features


def feature_table(paths: pd.Series, groups: list[str]) -> pd.DataFrame:
    """One row of features per path, decoded in threads (PIL releases the GIL)."""
    with ThreadPoolExecutor(os.cpu_count()) as pool:
        rows = pool.map(lambda path: image_features(path, groups), paths)
        rows = list(progress(rows, total=len(paths), desc="meta", unit="img"))
    return pd.DataFrame(rows)
