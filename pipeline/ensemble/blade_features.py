"""Stage meta's feature group measured inside the leaf's blade: its texture (the veins) and its
colour, free of the leaf's position, turn and the scan's resolution."""

from __future__ import annotations

import math

import cv2
import numpy as np

from pipeline.ensemble.contours import leaf_scale

# The blade group. The leaf is resized so that the square root of its area is BLADE_SCALE_PX
# pixels (the veins of a large and a small scan of one species then look alike) and its outline
# eroded away, so that only the blade's inside is measured. Texture: at each smoothing scale of
# BLADE_SIGMAS, the local form of the grey surface from its second derivatives, which a turn
# does not change: the share of flat pixels (curvedness, how strongly the surface bends, below
# BLADE_FLAT_GREY), the histogram of the others' shape index (a pit, a valley such as a vein, a
# saddle, a ridge, a dome; Koenderink and van Doorn), and the mean curvedness. Colour: the
# blade's CIELAB means and deviations.
BLADE_SCALE_PX = 128
BLADE_MAX_SIDE_PX = 1024  # as the disc group's cap: a failed, thread-thin mask stays small
BLADE_SIGMAS = (1, 2, 4)
BLADE_SHAPE_BINS = 8
BLADE_FLAT_GREY = 1.0  # of 255: JPEG noise on a flat blade is not texture
# erosion counts what lies past the crop as background (cv2's default counts it as object)
OUTSIDE = {"borderType": cv2.BORDER_CONSTANT, "borderValue": 0}
BLADE_FEATURES = (
    *(
        f"blade_s{sigma}_{name}"
        for sigma in BLADE_SIGMAS
        for name in ["flat", *(f"shape{b}" for b in range(BLADE_SHAPE_BINS)), "curvedness"]
    ),
    *(f"blade_{stat}_{channel}" for stat in ("mean", "std") for channel in ("l", "a", "b")),
)


def blade_features(
    rgb: np.ndarray, mask: np.ndarray, contour: np.ndarray | None
) -> dict[str, float]:
    """The blade group of one image (`mask` and `contour`: pipeline.ensemble.contours). Zeros
    without an object, and for a scale whose margin leaves no blade (a narrow leaf at sigma 4;
    a needle at every scale)."""
    if contour is None or len(contour) < 3:
        return dict.fromkeys(BLADE_FEATURES, 0.0)
    x, y, width, height = cv2.boundingRect(contour)
    scale, size = leaf_scale(contour, BLADE_SCALE_PX, BLADE_MAX_SIDE_PX)
    resizing = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    crop = np.ascontiguousarray(rgb[y : y + height, x : x + width])
    leaf = cv2.resize(crop, size, interpolation=resizing)
    unblended = inside_unblended(mask[y : y + height, x : x + width], size, resizing)
    grey = cv2.cvtColor(leaf, cv2.COLOR_RGB2GRAY).astype(np.float32)
    values = []
    for sigma in BLADE_SIGMAS:
        values += surface_statistics(grey, away_from_outline(unblended, filter_reach(sigma)), sigma)
    blade = away_from_outline(unblended, 1)
    lab = cv2.cvtColor(leaf, cv2.COLOR_RGB2LAB).astype(np.float64)[blade]
    values += [*lab.mean(axis=0), *lab.std(axis=0)] if blade.any() else [0.0] * 6
    return dict(zip(BLADE_FEATURES, map(float, values), strict=True))


def surface_statistics(grey: np.ndarray, blade: np.ndarray, sigma: float) -> list[float]:
    """At `sigma`, over the `blade` pixels: the square roots of the flat share and of the shape
    index bins' shares, and log(1 + the mean curvedness); zeros when `blade` is empty."""
    if not blade.any():
        return [0.0] * (BLADE_SHAPE_BINS + 2)
    shape, curvedness = surface_form(grey, sigma)
    bent = curvedness[blade] >= BLADE_FLAT_GREY
    counts, _ = np.histogram(shape[blade][bent], bins=BLADE_SHAPE_BINS, range=(-1.0, 1.0))
    shares = np.array([(~bent).sum(), *counts]) / bent.size
    return [*np.sqrt(shares), math.log1p(curvedness[blade].mean())]


def inside_unblended(mask: np.ndarray, size: tuple[int, int], resizing: int) -> np.ndarray:
    """The cropped object mask resized to `size`, less its outline's pixels (the scan blends
    them with the background) and what the resize blends with them."""
    inner = cv2.erode(mask.astype(np.uint8), np.ones((3, 3), np.uint8), **OUTSIDE)
    return cv2.resize(inner.astype(np.float32), size, interpolation=resizing) > 0.999


def away_from_outline(inside: np.ndarray, reach: int) -> np.ndarray:
    """The pixels of `inside` more than `reach` pixels from its edge: those whose filters
    (`surface_form`) read nothing of the outline."""
    side = 2 * reach + 1
    margin = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (side, side))
    return cv2.erode(inside.astype(np.uint8), margin, **OUTSIDE) > 0


def surface_form(grey: np.ndarray, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """Per pixel, from the Hessian's eigenvalues l1 >= l2 of the grey image smoothed at `sigma`:
    the shape index 2/pi * atan((l1 + l2) / (l1 - l2)) in [-1, 1] and the curvedness
    sqrt((l1^2 + l2^2) / 2), scaled by sigma^2 so that the scales compare."""
    side = 2 * (filter_reach(sigma) - 1) + 1  # the Gaussian cut at 3 sigma, the Sobel adds 1
    smooth = cv2.GaussianBlur(grey, (side, side), sigma)
    dxx = cv2.Sobel(smooth, cv2.CV_32F, 2, 0, ksize=3)
    dyy = cv2.Sobel(smooth, cv2.CV_32F, 0, 2, ksize=3)
    dxy = cv2.Sobel(smooth, cv2.CV_32F, 1, 1, ksize=3)
    mean, spread = (dxx + dyy) / 2, np.sqrt(((dxx - dyy) / 2) ** 2 + dxy**2)
    l1, l2 = mean + spread, mean - spread
    shape = 2 / math.pi * np.arctan2(l1 + l2, l1 - l2)
    return shape, np.sqrt((l1**2 + l2**2) / 2) * sigma**2


def filter_reach(sigma: float) -> int:
    """How many pixels from a pixel `surface_form` reads at `sigma`."""
    return math.ceil(3 * sigma) + 1
