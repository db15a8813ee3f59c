"""The leaf in an image: its object mask, its box, its largest outer contour, points along it."""

from __future__ import annotations

import functools
import math

import cv2
import numpy as np

# An object pixel differs from the background by more than this share of the range in some
# channel: a green leaf on brown wood of the same grey is found, and on grey images the channels
# are equal, so it is the grey level's difference.
OBJECT_CONTRAST = 0.25
# Otsu's split of the differences lowers that threshold for a leaf of low contrast (pale green on
# grey-green card), but never below this percentile of the border's own differences, so that
# the noise of a plain background stays out of the mask.
BORDER_NOISE_PERCENTILE = 99
# The leaf's box (`leaf_box`) leaves out a part of the mask smaller than this share of the
# largest part: specks of dust or noise, not a compound leaf's leaflets or a detached petiole.
LEAF_PART_SHARE = 0.01
# ... and is widened by this share of its long side, so that a crop keeps the tips and teeth of
# the margin clear of the frame, as the random crops of training expect.
LEAF_BOX_MARGIN = 0.05


def object_mask(rgb: np.ndarray) -> np.ndarray:
    """The pixels of an (H, W, 3) uint8 image that differ from the median colour of its border
    by more than `object_threshold` in some channel."""
    difference = colour_difference(rgb, np.median(border_pixels(rgb), axis=0))
    return difference > object_threshold(difference)


def border_pixels(image: np.ndarray) -> np.ndarray:
    """The pixels of an image's outermost rows and columns, concatenated (the corners twice)."""
    return np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])


def colour_difference(rgb: np.ndarray, colour: np.ndarray) -> np.ndarray:
    """(H, W) float32: each pixel's largest absolute difference from `colour` over the three
    channels (channel by channel: several times faster than numpy's reduction over the last
    axis)."""
    channels = [
        cv2.absdiff(rgb[..., channel].astype(np.float32), float(level))
        for channel, level in enumerate(colour)
    ]
    return functools.reduce(np.maximum, channels)


def object_threshold(difference: np.ndarray) -> float:
    """OBJECT_CONTRAST of the range, or Otsu's threshold of the (H, W) differences from the
    background where that is lower, but not below what the border's own pixels reach
    (BORDER_NOISE_PERCENTILE). A high-contrast image keeps the fixed threshold."""
    otsu, _ = cv2.threshold(
        np.round(difference).astype(np.uint8), 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU
    )
    noise = float(np.percentile(border_pixels(difference), BORDER_NOISE_PERCENTILE))
    return min(OBJECT_CONTRAST * 255, max(otsu, noise))


def leaf_box(rgb: np.ndarray) -> tuple[int, int, int, int] | None:
    """(left, top, right, bottom) of the leaf in an (H, W, 3) uint8 image: the box around the
    object mask's parts of at least LEAF_PART_SHARE of the largest part's area, widened by
    LEAF_BOX_MARGIN of its long side on each side and clipped to the image; None when the mask
    is empty (a blank image)."""
    mask = object_mask(rgb).astype(np.uint8)
    count, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if count <= 1:
        return None
    parts = stats[1:]  # label 0 is the background
    areas = parts[:, cv2.CC_STAT_AREA]
    parts = parts[areas >= LEAF_PART_SHARE * areas.max()]
    left, top = parts[:, cv2.CC_STAT_LEFT], parts[:, cv2.CC_STAT_TOP]
    right, bottom = left + parts[:, cv2.CC_STAT_WIDTH], top + parts[:, cv2.CC_STAT_HEIGHT]
    box = left.min(), top.min(), right.max(), bottom.max()
    margin = round(LEAF_BOX_MARGIN * max(box[2] - box[0], box[3] - box[1]))
    height, width = mask.shape
    return (
        max(0, box[0] - margin),
        max(0, box[1] - margin),
        min(width, box[2] + margin),
        min(height, box[3] + margin),
    )


def cut_to_leaf(rgb: np.ndarray) -> np.ndarray:
    """The image cut to its `leaf_box`; the whole image when no leaf is found."""
    box = leaf_box(rgb)
    if box is None:
        return rgb
    left, top, right, bottom = box
    return rgb[top:bottom, left:right]


def largest_contour(mask: np.ndarray) -> np.ndarray | None:
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    return max(contours, key=cv2.contourArea) if contours else None


def leaf_scale(
    contour: np.ndarray, unit_px: int, max_side_px: int
) -> tuple[float, tuple[int, int]]:
    """The resize factor that makes the square root of the contour's area `unit_px` pixels (so
    the scan's resolution drops out), capped so that its long side stays within `max_side_px`
    (a thread-thin failed mask has almost no area); and the (width, height) of the contour's
    bounding box resized by it."""
    _, _, width, height = cv2.boundingRect(contour)
    unit = math.sqrt(max(cv2.contourArea(contour), 1.0))
    scale = min(unit_px / unit, max_side_px / max(width, height))
    return scale, (max(1, round(width * scale)), max(1, round(height * scale)))


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


def edge_points(points: np.ndarray) -> np.ndarray:
    """A closed outline's points moved half a pixel along their outward normals."""
    tangent = np.roll(points, -1, axis=0) - np.roll(points, 1, axis=0)
    normal = np.stack([tangent[:, 1], -tangent[:, 0]], axis=1)
    normal /= np.maximum(np.hypot(*normal.T), 1e-9)[:, None]
    x, y = points.T
    turning = np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y)  # twice the signed area
    return points + 0.5 * np.sign(turning) * normal
