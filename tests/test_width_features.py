"""Stage meta's widths group: the share of the leaf's area in parts narrower than a disc."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from pipeline.ensemble.features import image_features
from pipeline.ensemble.region_features import WIDTH_RADII, WIDTHS_FEATURES

STALK_SHARE = 0.028  # of the drawn leaf's area at scale 1 (measured on the drawing)


def save_stalked_leaf(path: Path, scale: float, angle: float) -> str:
    """A white round blade (radius 100 px) on a stalk 6 px wide and 150 px long, drawn at
    `scale` and turned by `angle` degrees, on black."""
    size = round(500 * scale)
    centre, top = size // 2, size // 2 - round(60 * scale)
    width = round(6 * scale)
    pixels = np.zeros((size, size), np.uint8)
    cv2.circle(pixels, (centre, top), round(100 * scale), 255, -1)
    stalk_end = top + round(250 * scale)
    cv2.rectangle(
        pixels, (centre - width // 2, top), (centre + width - width // 2 - 1, stalk_end), 255, -1
    )
    turn = cv2.getRotationMatrix2D((centre, centre), angle, 1.0)
    Image.fromarray(cv2.warpAffine(pixels, turn, (size, size), flags=cv2.INTER_NEAREST)).save(path)
    return str(path)


def removed_shares(path: str) -> np.ndarray:
    """Per radius of WIDTH_RADII, the share of the leaf's area the opening removes."""
    features = image_features(path, ["widths"])
    assert list(features) == list(WIDTHS_FEATURES)
    return np.array(list(features.values())) ** 2  # the features are square roots


def test_a_round_leaf_has_no_part_narrower_than_the_discs(tmp_path):
    pixels = np.zeros((400, 400), np.uint8)
    cv2.circle(pixels, (200, 200), 100, 255, -1)  # the largest disc's radius is 0.4 x 177 px
    Image.fromarray(pixels).save(tmp_path / "round.png")
    assert removed_shares(str(tmp_path / "round.png")).max() < 0.01  # pixel steps only


@pytest.mark.parametrize(("scale", "angle"), [(1, 0), (1, 35), (2, 0), (2, 80)])
def test_the_stalk_is_removed_once_the_disc_is_wider_than_it(tmp_path, scale, angle):
    """The stalk is 6 / 180 of the square root of the leaf's area wide; the same share of the
    area goes at every radius past its half width (1.7 %), whatever the scan's resolution and
    the leaf's turn (up to pixel steps), and none below it."""
    shares = removed_shares(save_stalked_leaf(tmp_path / "leaf.png", scale, angle))
    radii = np.array(WIDTH_RADII)
    assert shares[radii < 0.015].max() < 0.002
    past_the_stalk = shares[(radii > 0.03) & (radii < 0.2)]
    assert past_the_stalk == pytest.approx(STALK_SHARE, abs=0.006)
    assert shares[-1] < STALK_SHARE + 0.01  # the blade itself is wider than every disc


def test_the_shares_grow_with_the_disc(tmp_path):
    """An opening by a larger disc removes all a smaller one removes (up to pixel steps)."""
    t = np.linspace(0, 2 * np.pi, 720, endpoint=False)
    radius = 120 * (1 + 0.4 * np.cos(5 * t))  # five slender lobes
    polygon = np.stack([200 + radius * np.cos(t), 200 + radius * np.sin(t)], 1).astype(np.int32)
    pixels = np.zeros((400, 400), np.uint8)
    cv2.fillPoly(pixels, [polygon], 255)
    Image.fromarray(pixels).save(tmp_path / "lobed.png")
    shares = removed_shares(str(tmp_path / "lobed.png"))
    assert np.diff(shares).min() > -0.002
    assert shares[-1] > 0.3  # the largest disc no longer fits into the lobes
