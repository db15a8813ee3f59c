"""Stage meta's feature groups measured on the leaf's area: discs along its outline, the widths
of its parts, and rings around its centre. All are free of the leaf's position, turn and the
scan's resolution."""

from __future__ import annotations

import math

import cv2
import numpy as np

from pipeline.ensemble.contours import edge_points, leaf_scale, resample_contour

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

# The widths group (a granulometry): on the disc group's canvas, at each radius of WIDTH_RADII (a
# share of the square root of the leaf's area, in equal ratios from a fine tooth to a broad lobe)
# the share of the leaf's area that an opening by a disc of that radius removes: the parts of the
# leaf narrower than the disc (a petiole, teeth, bristle tips, slender lobes), which curvature
# along the outline sees only as turns.
WIDTH_RADII = tuple(float(radius) for radius in np.geomspace(0.01, 0.4, 14))
WIDTHS_FEATURES = tuple(f"widths_r{round(1000 * radius)}" for radius in WIDTH_RADII)

# The rings group: RINGS rings around the leaf's centre of area, out to RINGS_REACH times the
# square root of its area, each sampled at RING_ANGLES angles on two radii; how the leaf fills a
# ring, as the magnitudes of the first RING_HARMONICS angular harmonics of its occupancy
# (harmonic 0: the share of the ring inside the leaf; k: a pattern repeating k times round it,
# such as k lobes). A magnitude does not depend on where the pattern starts: the leaf's turn.
RINGS = 10
RINGS_REACH = 2.0
RING_ANGLES = 64
RING_HARMONICS = 8
RINGS_FEATURES = tuple(f"ring{ring}_h{k}" for ring in range(RINGS) for k in range(RING_HARMONICS))


def disc_features(mask: np.ndarray, contour: np.ndarray | None) -> dict[str, float]:
    """Per radius of DISC_RADII: the histogram of the share of a disc around each outline point
    that lies inside the object, and the shares' standard deviation and mean. Each bin holds the
    square root of its share of the points (a Hellinger map: linear models separate histograms
    better so). Free of position, resolution and turn; zeros without an object."""
    if contour is None or len(contour) < 3:
        return dict.fromkeys(DISC_FEATURES, 0.0)
    margin = math.ceil(max(DISC_RADII) * DISC_SCALE_PX) + 2
    inside_leaf, scale = leaf_canvas(mask, contour, margin)
    x, y, _, _ = cv2.boundingRect(contour)
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


def width_features(mask: np.ndarray, contour: np.ndarray | None) -> dict[str, float]:
    """Per radius of WIDTH_RADII: the square root of the share of the leaf's area that an opening
    by a disc of that radius removes (the parts narrower than the disc), found with distance
    transforms: the opening keeps the pixels within the radius of a point whose disc fits inside
    the leaf. Free of position, resolution and turn; zeros without an object."""
    if contour is None or len(contour) < 3:
        return dict.fromkeys(WIDTHS_FEATURES, 0.0)
    leaf = leaf_canvas(mask, contour, margin=1)[0] > 0.5
    area = leaf.sum()
    depth = distance_to_zero(leaf)
    values = []
    for radius in WIDTH_RADII:
        reach = radius * DISC_SCALE_PX
        fits = depth > reach  # the centres of the discs that lie inside the leaf
        kept = (distance_to_zero(~fits) <= reach) & leaf if fits.any() else fits
        values.append(math.sqrt(1 - kept.sum() / max(area, 1)))
    return dict(zip(WIDTHS_FEATURES, values, strict=True))


def leaf_canvas(mask: np.ndarray, contour: np.ndarray, margin: int) -> tuple[np.ndarray, float]:
    """The object mask cropped to the contour's box and resized so that the square root of the
    leaf's area is DISC_SCALE_PX pixels (`leaf_scale`; float, the resize blends the edge),
    padded by `margin` pixels of background; and the resize factor."""
    x, y, width, height = cv2.boundingRect(contour)
    scale, size = leaf_scale(contour, DISC_SCALE_PX, DISC_MAX_SIDE_PX)
    crop = mask[y : y + height, x : x + width].astype(np.float32)
    resized = cv2.resize(crop, size, interpolation=cv2.INTER_AREA)
    return cv2.copyMakeBorder(resized, *(margin,) * 4, cv2.BORDER_CONSTANT, value=0), scale


def distance_to_zero(binary: np.ndarray) -> np.ndarray:
    """Per pixel of `binary`, the Euclidean distance to the nearest false pixel (0 on those)."""
    return cv2.distanceTransform(binary.astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)


def ring_features(mask: np.ndarray, contour: np.ndarray | None) -> dict[str, float]:
    """Per ring of RINGS: the magnitudes of the angular harmonics of the leaf's occupancy (the
    mask slightly blurred, so that the pixel steps of a small scan do not show). Zeros without an
    object."""
    moments = cv2.moments(mask.astype(np.uint8), True)
    if contour is None or len(contour) < 3 or moments["m00"] < 1:
        return dict.fromkeys(RINGS_FEATURES, 0.0)
    centre_x, centre_y = moments["m10"] / moments["m00"], moments["m01"] / moments["m00"]
    unit = math.sqrt(moments["m00"])
    blur = 2 * max(1, int(unit / 40)) + 1
    occupied = cv2.GaussianBlur(mask.astype(np.float32), (blur, blur), 0)
    radii = (np.arange(2 * RINGS) + 0.5) / (2 * RINGS) * RINGS_REACH * unit
    angles = np.arange(RING_ANGLES) / RING_ANGLES * 2 * math.pi
    x = (centre_x + radii[:, None] * np.cos(angles)).astype(np.float32)
    y = (centre_y + radii[:, None] * np.sin(angles)).astype(np.float32)
    inside = cv2.remap(occupied, x, y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    by_ring = inside.reshape(RINGS, 2, RING_ANGLES).mean(axis=1)
    harmonics = np.abs(np.fft.rfft(by_ring, axis=1))[:, :RING_HARMONICS] / RING_ANGLES
    return dict(zip(RINGS_FEATURES, map(float, harmonics.ravel()), strict=True))
