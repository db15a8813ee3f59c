"""The leaf in an image: its object mask, its box, its largest outer contour, points along it."""

from __future__ import annotations

import functools
import itertools
import math

import cv2
import numpy as np

# The background is a plane of colour fitted to the border (`background_planes`), so that a scan
# or photo lit unevenly, darker on one side, is told from its leaf all over. Each side of the
# border is cut into BORDER_PARTS parts, and of the planes through the median colours of three
# parts (BACKGROUND_TRIALS of them, one fixed draw), the one whose median distance to all the
# parts is least is kept (Rousseeuw's least median of squares): a leaf or petiole running off
# the frame over fewer than half the parts does not tilt it. It is refitted by least squares to
# the parts within INLIER_SPREAD times that median distance (or one grey level) of it.
BORDER_PARTS = 6
BACKGROUND_TRIALS = 256
INLIER_SPREAD = 2.5
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
    """The pixels of an (H, W, 3) uint8 image that differ from its background, the plane of
    colour fitted to its border, by more than `object_threshold` in some channel."""
    difference = background_difference(rgb)
    return difference > object_threshold(difference)


def border_pixels(image: np.ndarray) -> np.ndarray:
    """The pixels of an image's outermost rows and columns, concatenated (the corners twice)."""
    return np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])


def plane_coordinates(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """The pixel centres' x (columns) and y (rows), float32 in [-0.5, 0.5]."""
    return (
        (np.arange(width, dtype=np.float32) + 0.5) / width - 0.5,
        (np.arange(height, dtype=np.float32) + 0.5) / height - 0.5,
    )


def border_parts(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(4 x BORDER_PARTS, 3): the (1, x, y) of the centre of each part of the border's four sides
    (`plane_coordinates`), and its median colour. A side is cut into equal parts after
    repeating a few of its pixels, evenly spread, up to a whole number a part (every pixel, on a
    side shorter than BORDER_PARTS)."""
    x, y = plane_coordinates(*rgb.shape[:2])
    sides = [(rgb[0], x, y[0]), (rgb[-1], x, y[-1]), (rgb[:, 0], x[0], y), (rgb[:, -1], x[-1], y)]
    centres, colours = [], []
    for pixels, side_x, side_y in sides:
        side_x, side_y = np.broadcast_arrays(side_x, side_y)
        per_part = -(-len(pixels) // BORDER_PARTS)
        spread = np.arange(BORDER_PARTS * per_part) * len(pixels) // (BORDER_PARTS * per_part)
        colours.append(np.median(pixels[spread].reshape(BORDER_PARTS, per_part, 3), axis=1))
        centres += [
            side_x[spread].reshape(BORDER_PARTS, per_part).mean(axis=1),
            side_y[spread].reshape(BORDER_PARTS, per_part).mean(axis=1),
        ]
    xs, ys = np.concatenate(centres[0::2]), np.concatenate(centres[1::2])
    return np.stack([np.ones_like(xs), xs, ys], axis=1).astype(np.float64), np.concatenate(colours)


def plane_trials() -> np.ndarray:
    """(BACKGROUND_TRIALS, 3): a fixed draw of triples of `border_parts`, each from two sides or
    more (three parts of one side lie on a line)."""
    triples = [
        triple
        for triple in itertools.combinations(range(4 * BORDER_PARTS), 3)
        if len({part // BORDER_PARTS for part in triple}) > 1
    ]
    draw = np.random.default_rng(0).choice(len(triples), BACKGROUND_TRIALS, replace=False)
    return np.array(triples)[np.sort(draw)]


PLANE_TRIALS = plane_trials()


def background_planes(rgb: np.ndarray) -> np.ndarray:
    """(3, 3): per channel, the level at the image's centre and its slopes along x and y of the
    background's plane (see BORDER_PARTS). A plain background's plane is flat at its colour."""
    centres, colours = border_parts(rgb)
    systems = centres[PLANE_TRIALS]
    solvable = np.abs(np.linalg.det(systems)) > 1e-9
    if not solvable.any():  # an image one pixel high or wide: its border is a line
        return np.linalg.lstsq(centres, colours, rcond=None)[0].T
    planes = np.linalg.solve(systems[solvable], colours[PLANE_TRIALS[solvable]])
    distances = np.abs(np.matmul(centres, planes) - colours).max(axis=2)  # (trials, parts)
    spread = np.median(distances, axis=1)
    best = np.argmin(spread)
    near = distances[best] <= max(INLIER_SPREAD * spread[best], 1.0)
    refitted, *_ = np.linalg.lstsq(centres[near], colours[near], rcond=None)
    return refitted.T


def background_difference(rgb: np.ndarray) -> np.ndarray:
    """(H, W) float32: each pixel's largest absolute difference from `background_planes` over
    the three channels (channel by channel: several times faster than numpy's reduction over
    the last axis)."""
    x, y = plane_coordinates(*rgb.shape[:2])
    channels = []
    for channel, (level, slope_x, slope_y) in enumerate(background_planes(rgb)):
        plane = np.add.outer(np.float32(level) + np.float32(slope_y) * y, np.float32(slope_x) * x)
        channels.append(cv2.absdiff(rgb[..., channel].astype(np.float32), plane))
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
