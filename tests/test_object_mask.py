"""Stage meta's object mask (pipeline/ensemble/contours.py `object_mask`): a quarter of the range
on a high-contrast image, Otsu's lower threshold for a leaf of low contrast, the background's
noise kept out, a background lit unevenly told from the leaf; and the leaf's box that
`crop_to_leaf` cuts the networks' images to (`leaf_box`)."""

import cv2
import numpy as np

from pipeline.ensemble.contours import (
    LEAF_BOX_MARGIN,
    OBJECT_CONTRAST,
    border_pixels,
    cut_to_leaf,
    largest_contour,
    leaf_box,
    object_mask,
)

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
    difference = np.abs(rgb.astype(np.float64) - np.median(border_pixels(rgb), axis=0)).max(axis=2)
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


def lit_unevenly(leaf: np.ndarray, leaf_rgb, darkest: int, brightest: int) -> np.ndarray:
    """A leaf of one colour on grey card lit from one side: a ramp from `darkest` at the left
    edge to `brightest` at the right, with a little noise."""
    ramp = np.broadcast_to(np.linspace(darkest, brightest, SIZE)[None, :, None], (SIZE, SIZE, 3))
    image = np.where(leaf[..., None], np.array(leaf_rgb, float), ramp)
    image += np.random.default_rng(0).normal(0.0, 3.0, image.shape)
    return np.clip(np.round(image), 0, 255).astype(np.uint8)


def test_a_background_lit_unevenly_is_told_from_the_leaf():
    # Against the border's median grey, the card's bright side differs as much as the leaf does
    # and the mask takes a sixth of the card; against the plane fitted to the border it is
    # background.
    leaf = leaf_shape()
    image = lit_unevenly(leaf, (30, 90, 20), darkest=100, brightest=240)
    assert iou(quarter_range_mask(image), leaf) < 0.6
    assert iou(object_mask(image), leaf) > 0.98


def test_a_leaf_running_off_the_frame_does_not_tilt_the_background():
    # The leaf covers most of the bottom edge, a third of the border: a least-squares plane
    # through every border pixel would lean towards it; the least-median plane does not.
    leaf = leaf_shape(centre=(100, 190), axes=(120, 40), angle=0)
    image = lit_unevenly(leaf, (30, 90, 20), darkest=100, brightest=240)
    assert border_pixels(leaf).mean() > 0.3
    assert iou(object_mask(image), leaf) > 0.98


def shapes(*boxes: tuple[int, int, int, int]) -> np.ndarray:
    """A mask of filled rectangles (left, top, right, bottom), right and bottom excluded."""
    canvas = np.zeros((SIZE, SIZE), bool)
    for left, top, right, bottom in boxes:
        canvas[top:bottom, left:right] = True
    return canvas


def test_the_leaf_box_is_the_leaf_with_a_margin_of_its_long_side():
    image = scan(shapes((40, 100, 80, 120)), (60, 120, 40), (245, 245, 240), noise=0.0)
    margin = round(LEAF_BOX_MARGIN * 40)  # the long side is 40 px
    assert leaf_box(image) == (40 - margin, 100 - margin, 80 + margin, 120 + margin)
    assert cut_to_leaf(image).shape == (20 + 2 * margin, 40 + 2 * margin, 3)


def test_the_leaf_box_keeps_leaflets_leaves_out_specks_and_stays_in_the_frame():
    leaf, leaflet, speck = (0, 50, 100, 150), (150, 10, 170, 30), (190, 190, 192, 192)
    # A leaflet of 4 % of the leaf's area widens the box; a speck of 0.04 % does not.
    image = scan(shapes(leaf, leaflet, speck), (20, 20, 20), (255, 255, 255), noise=0.0)
    margin = round(LEAF_BOX_MARGIN * 170)
    assert leaf_box(image) == (0, 10 - margin, 170 + margin, 150 + margin)


def test_a_blank_image_has_no_leaf_and_is_not_cut():
    blank = np.full((SIZE, SIZE, 3), 200, np.uint8)
    assert leaf_box(blank) is None
    assert cut_to_leaf(blank) is blank
