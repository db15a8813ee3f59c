"""Stage meta's blade group: the texture and colour inside the leaf."""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from pipeline.ensemble.blade_features import (
    BLADE_FEATURES,
    BLADE_SHAPE_BINS,
    BLADE_SIGMAS,
    surface_form,
)
from pipeline.ensemble.features import image_features

LEAF_GREEN = (60, 140, 50)
TEXTURE = re.compile(r"blade_s\d+_(flat|shape\d+)")


def save_veined_leaf(path: Path, size: int, vein_spacing: float, angle: float = 0) -> str:
    """A green elliptic leaf on white, `size` px square, crossed by dark veins `vein_spacing`
    (a share of `size`) apart (none when 0), turned by `angle` degrees: drawn at 4 x `size`
    and shrunk, as a scanner averages."""
    big = 4 * size
    leaf = np.zeros((big, big), np.uint8)
    cv2.ellipse(leaf, (big // 2, big // 2), (int(0.35 * big), int(0.2 * big)), 0, 0, 360, 1, -1)
    veins = np.zeros_like(leaf)
    for x in np.arange(0.1, 0.9, vein_spacing) * big if vein_spacing else []:
        cv2.line(veins, (int(x), 0), (int(x + 0.3 * big), big), 1, big // 100)
    pixels = np.full((big, big, 3), 255, np.uint8)
    pixels[leaf > 0] = LEAF_GREEN
    pixels[(veins > 0) & (leaf > 0)] = (30, 70, 25)
    turn = cv2.getRotationMatrix2D((big / 2, big / 2), angle, 1.0)
    pixels = cv2.warpAffine(
        pixels, turn, (big, big), flags=cv2.INTER_NEAREST, borderValue=(255, 255, 255)
    )
    shrunk = cv2.resize(pixels, (size, size), interpolation=cv2.INTER_AREA)
    Image.fromarray(shrunk).save(path)
    return str(path)


def blade(path: str) -> dict[str, float]:
    return image_features(path, ["blade"])


def texture(features: dict[str, float]) -> np.ndarray:
    return np.array([value for name, value in features.items() if TEXTURE.fullmatch(name)])


def test_a_flat_blade_is_flat_at_every_scale_and_has_its_own_colour(tmp_path):
    features = blade(save_veined_leaf(tmp_path / "flat.png", 300, 0))
    assert list(features) == list(BLADE_FEATURES)
    for sigma in BLADE_SIGMAS:
        assert features[f"blade_s{sigma}_flat"] == pytest.approx(1.0)
        assert features[f"blade_s{sigma}_curvedness"] == pytest.approx(0.0, abs=0.01)
    lab = cv2.cvtColor(np.uint8([[LEAF_GREEN]]), cv2.COLOR_RGB2LAB)[0, 0]
    assert [features[f"blade_mean_{c}"] for c in "lab"] == pytest.approx(lab, abs=0.5)
    assert [features[f"blade_std_{c}"] for c in "lab"] == pytest.approx([0, 0, 0], abs=0.5)


def test_veins_show_in_the_texture_free_of_turn_and_resolution(tmp_path):
    leaf = blade(save_veined_leaf(tmp_path / "leaf.png", 400, 0.06))
    # per scale, the flat share and the shape bins hold square roots of shares summing to 1
    shares = texture(leaf).reshape(len(BLADE_SIGMAS), BLADE_SHAPE_BINS + 1) ** 2
    assert shares.sum(axis=1) == pytest.approx(np.ones(len(BLADE_SIGMAS)))
    assert leaf["blade_s2_flat"] < 0.9 and leaf["blade_s2_curvedness"] > 1
    turned = blade(save_veined_leaf(tmp_path / "turned.png", 400, 0.06, angle=35))
    larger = blade(save_veined_leaf(tmp_path / "larger.png", 800, 0.06))
    denser = blade(save_veined_leaf(tmp_path / "denser.png", 400, 0.03))
    moved = [np.abs(texture(other) - texture(leaf)).sum() for other in (turned, larger)]
    assert np.abs(texture(denser) - texture(leaf)).sum() > 3 * max(moved)


def test_a_dark_vein_is_a_valley_and_a_bright_one_a_ridge():
    grey = np.full((41, 41), 100, np.float32)
    grey[:, 19:22] = 40  # a dark vertical vein
    shape, curvedness = surface_form(grey, 2)
    assert shape[20, 20] == pytest.approx(0.5, abs=0.05)  # valley: l1 > 0, l2 = 0
    assert curvedness[20, 20] > 10 and curvedness[20, 5] < 0.01  # flat far from it
    shape, _ = surface_form(200 - grey, 2)
    assert shape[20, 20] == pytest.approx(-0.5, abs=0.05)  # a bright vein: a ridge
    turned, _ = surface_form(np.ascontiguousarray(grey.T), 2)
    assert turned[20, 20] == pytest.approx(0.5, abs=0.05)


def test_no_leaf_or_a_needle_gives_zeros(tmp_path):
    blank = np.full((50, 50, 3), 128, np.uint8)
    Image.fromarray(blank).save(tmp_path / "blank.png")
    assert set(blade(str(tmp_path / "blank.png")).values()) == {0.0}
    needle = np.zeros((1600, 1600), np.uint8)
    cv2.line(needle, (0, 0), (1599, 1599), 255, 1)
    Image.fromarray(needle).save(tmp_path / "needle.png")  # its canvas: tests/test_meta_features.py
    assert set(blade(str(tmp_path / "needle.png")).values()) == {0.0}
