"""Stage meta's object mask (pipeline/ensemble/contours.py `object_mask`): a quarter of the range
on a high-contrast image, Otsu's lower threshold for a leaf of low contrast, and the
background's noise kept out."""

import cv2
import numpy as np

from pipeline.ensemble.contours import OBJECT_CONTRAST, largest_contour, object_mask

SIZE = 200


def leaf_shape(centre=(100, 90), axes=(60, 30), angle=30) -> np.ndarray:
    canvas = np.zeros((SIZE, SIZE), np.uint8)
    cv2.ellipse(canvas, centre, axes, angle, 0, 360, 1, -1)
    return canvas.astype(bool)


def scan(leaf: np.ndarray, leaf_rgb, background_rgb, noise: float, seed: int = 0) -> np.ndarray:
    """A leaf of one colour on a background of another, with Gaussian noise in every channel."""
    image = np.where(leaf[..., None], leaf_rgb, background_rgb).astype(np.float64)
    image += np.random.default_rng(seed).normal(0.0, noise, image.shape)
    return np.clip(np.round(image), 0, 255).astype(np.uint8)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def quarter_range_mask(rgb: np.ndarray) -> np.ndarray:
    """The fixed rule alone: a quarter of the range from the border's median in some channel."""
    border = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]])
    difference = np.abs(rgb.astype(np.float64) - np.median(border, axis=0)).max(axis=2)
    return difference > OBJECT_CONTRAST * 255


def test_a_high_contrast_leaf_keeps_the_quarter_range_threshold():
    leaf = leaf_shape()
    for image in (
        scan(leaf, (20, 20, 20), (255, 255, 255), noise=0.0),  # a silhouette
        scan(leaf, (60, 120, 40), (245, 245, 240), noise=4.0),  # a green leaf scanned on white
    ):
        mask = object_mask(image)
        np.testing.assert_array_equal(mask, quarter_range_mask(image))
        assert iou(mask, leaf) > 0.98


def test_a_leaf_of_low_contrast_is_found_whole():
    # Pale green on grey-green card: no channel differs by a quarter of the range, so the fixed
    # threshold alone finds nothing but noise; Otsu's split of the differences finds the leaf.
    leaf = leaf_shape()
    image = scan(leaf, (120, 165, 110), (150, 160, 150), noise=3.0)
    assert quarter_range_mask(image).sum() < 0.01 * leaf.sum()
    assert iou(object_mask(image), leaf) > 0.95


def test_the_noise_of_a_plain_background_stays_out():
    # A small leaf on a noisy background: Otsu's threshold alone would split the noise itself;
    # the border's own spread bounds it, so the leaf stays the largest object and little of the
    # background is marked.
    leaf = leaf_shape(centre=(110, 120), axes=(12, 6), angle=0)
    image = scan(leaf, (120, 170, 90), (170, 170, 170), noise=15.0)
    mask = object_mask(image)
    contour = largest_contour(mask)
    assert abs(cv2.contourArea(contour) - leaf.sum()) < 0.25 * leaf.sum()
    assert mask[~leaf].mean() < 0.02
