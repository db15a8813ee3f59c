"""Stage meta's image features: size, shape, the outline, turn pairs, disc and ring groups, on drawn
leaves whose answers are known."""

from __future__ import annotations

import math
from pathlib import Path
from typing import get_args

import cv2
import numpy as np
import pytest
from PIL import Image

from pipeline.config.schema import MetaFeature
from pipeline.ensemble import features as features_module
from pipeline.ensemble.blade_features import BLADE_MAX_SIDE_PX
from pipeline.ensemble.features import (
    GROUP_COLUMNS,
    MEASURES,
    OUTLINE_FEATURES,
    TURN_PAIR_FEATURES,
    image_features,
)
from pipeline.ensemble.region_features import (
    DISC_FEATURES,
    DISC_MAX_SIDE_PX,
    RINGS,
    RINGS_FEATURES,
    RINGS_REACH,
)


def save_rectangle(path: Path, size: tuple[int, int], box: tuple[int, int, int, int], fg, bg):
    """A (width, height) image of colour `bg` with the pixels in `box` (x0, y0, x1, y1) `fg`."""
    pixels = np.full((size[1], size[0], 3), bg, dtype=np.uint8)
    x0, y0, x1, y1 = box
    pixels[y0:y1, x0:x1] = fg
    Image.fromarray(pixels).save(path)  # PNG: lossless, so the counts are exact
    return str(path)


@pytest.mark.parametrize(
    ("fg", "bg"),
    [(255, 0), (0, 255), ((40, 160, 40), (250, 250, 245)), ((60, 140, 50), (150, 80, 20))],
)
def test_features_measure_size_area_and_outline_in_original_pixels(tmp_path, fg, bg):
    # A 30 x 20 object in a 200 x 100 image, on a dark or a light background, or green on brown
    # wood of the same grey level (found by its colour).
    path = save_rectangle(tmp_path / "leaf.png", (200, 100), (50, 40, 80, 60), fg, bg)
    features = image_features(path, ["size", "shape"])
    assert features["log_width"] == pytest.approx(math.log(200))
    assert features["log_height"] == pytest.approx(math.log(100))
    assert features["log_aspect"] == pytest.approx(math.log(2))
    assert features["log_object_area"] == pytest.approx(math.log1p(600))
    assert features["object_share"] == pytest.approx(600 / 20_000)
    assert features["log_outline"] == pytest.approx(math.log1p(2 * (30 + 20)))
    assert features["outline_per_sqrt_area"] == pytest.approx(100 / math.sqrt(601))
    # A rectangle is its own convex hull and its own simplified polygon; the contour runs
    # through the border pixels' centres, a 29 x 19 rectangle.
    assert features["solidity"] == 1 and features["polygon_vertices"] == 4
    assert features["log_hull_perimeter_ratio"] == 0 and features["log_roughness"] == 0
    assert features["log_elongation"] == pytest.approx(2 * math.log(29 / 19), abs=1e-3)


def test_notches_and_teeth_show_in_the_contour_features(tmp_path):
    plain = save_rectangle(tmp_path / "plain.png", (120, 120), (20, 20, 100, 100), 255, 0)
    pixels = np.asarray(Image.open(plain)).copy()
    pixels[20:60, 55:65] = 0  # a deep notch from the top edge
    for x in range(24, 100, 8):  # teeth along the bottom edge
        pixels[100:104, x : x + 4] = 255
    Image.fromarray(pixels).save(tmp_path / "toothed.png")
    before = image_features(plain, ["shape"])
    after = image_features(str(tmp_path / "toothed.png"), ["shape"])
    assert after["solidity"] < before["solidity"] == 1
    assert after["log_hull_perimeter_ratio"] > before["log_hull_perimeter_ratio"]
    assert after["polygon_vertices"] > before["polygon_vertices"]


def save_leaf(path: Path, size: int, angle: float, teeth: int = 0) -> str:
    """A white lobed leaf on black, `size` px square, turned by `angle` degrees."""
    t = np.linspace(0, 2 * np.pi, 720, endpoint=False)
    radius = 0.3 * (1 + 0.25 * np.cos(3 * t) + 0.04 * np.cos(teeth * t) * (teeth > 0))
    x, y = radius * np.cos(t + np.radians(angle)), radius * 0.7 * np.sin(t + np.radians(angle))
    polygon = np.stack([(0.5 + x) * size, (0.5 + y) * size], axis=1).round().astype(np.int32)
    pixels = np.zeros((size, size, 3), np.uint8)
    cv2.fillPoly(pixels, [polygon], (255, 255, 255))
    Image.fromarray(pixels).save(path)
    return str(path)


def group(path: str, name: str) -> np.ndarray:
    """The values of feature group `name` of the image at `path`, in column order."""
    return np.array(list(image_features(path, [name]).values()))


def save_circle(path: Path, size: int, radius: int) -> str:
    """A white disc of `radius` px centred in a black `size` px square: a round leaf."""
    pixels = np.zeros((size, size), np.uint8)
    cv2.circle(pixels, (size // 2, size // 2), radius, 255, -1)
    Image.fromarray(pixels).save(path)
    return str(path)


def test_outline_features_ignore_position_size_and_turn_but_see_the_margin(tmp_path):
    leaf = group(save_leaf(tmp_path / "leaf.png", 400, 0), "outline")
    assert len(leaf) == len(OUTLINE_FEATURES) and np.isfinite(leaf).all()
    turned = group(save_leaf(tmp_path / "turned.png", 400, 90), "outline")
    larger = group(save_leaf(tmp_path / "larger.png", 800, 35), "outline")
    toothed = group(save_leaf(tmp_path / "toothed.png", 400, 0, teeth=40), "outline")
    # The same leaf turned, or scanned twice as large: the histograms (6 scales, each summing
    # to 1) move by little (pixel steps); teeth on the margin move them several times as far.
    change = {
        name: np.abs(other - leaf).sum()
        for name, other in [("turned", turned), ("larger", larger), ("toothed", toothed)]
    }
    assert change["turned"] < 2 and change["larger"] < 2
    assert change["toothed"] > 4 * max(change["turned"], change["larger"])
    fine_std = OUTLINE_FEATURES.index("turn4_std")
    assert toothed[fine_std] > 5 * leaf[fine_std]


def disc(path: str) -> dict[str, float]:
    return image_features(path, ["disc"])


def test_disc_features_ignore_position_resolution_and_turn_but_see_the_margin(tmp_path):
    leaf = disc(save_leaf(tmp_path / "leaf.png", 400, 0))
    assert list(leaf) == list(DISC_FEATURES) and np.isfinite(list(leaf.values())).all()
    toothed = disc(save_leaf(tmp_path / "toothed.png", 400, 0, teeth=40))
    radii = ("5", "10", "20", "40")
    for name, size, angle in [("turned", 400, 90), ("smaller", 200, 10), ("larger", 800, 35)]:
        other = disc(save_leaf(tmp_path / f"{name}.png", size, angle))
        for radius in radii:  # pixel steps of the drawn outline only
            assert abs(other[f"disc{radius}_mean"] - leaf[f"disc{radius}_mean"]) < 0.02, name
            assert 0.7 < other[f"disc{radius}_std"] / leaf[f"disc{radius}_std"] < 1.4, name
    # 40 teeth around the margin: the small discs see them, the largest hardly
    assert toothed["disc5_std"] > 3 * leaf["disc5_std"]
    assert toothed["disc10_std"] > 2 * leaf["disc10_std"]
    assert toothed["disc40_std"] < 1.2 * leaf["disc40_std"]


def test_disc_shares_of_a_circle_are_even_and_near_a_half(tmp_path):
    features = image_features(save_circle(tmp_path / "circle.png", 300, 120), ["disc"])
    for radius in ("5", "10", "20", "40"):
        # on a convex outline a little less than half of a disc is inside (up to pixel steps)
        assert 0.4 < features[f"disc{radius}_mean"] < 0.52
        assert features[f"disc{radius}_std"] < 0.05  # pixel steps only
    bins = [features[f"disc5_bin{b}"] ** 2 for b in range(12)]  # bins hold sqrt(share)
    assert sum(bins) == pytest.approx(1.0)
    assert bins[5] + bins[6] > 0.95  # the two bins either side of 1/2


def test_turn_pairs_ignore_position_size_and_turn_but_see_the_margin(tmp_path):
    leaf = group(save_leaf(tmp_path / "leaf.png", 400, 0), "turn_pairs")
    assert len(leaf) == len(TURN_PAIR_FEATURES) and np.isfinite(leaf).all()
    # each pair's bins hold sqrt(share): their squares sum to 1
    assert (leaf**2).reshape(3, -1).sum(axis=1) == pytest.approx([1, 1, 1])
    turned = group(save_leaf(tmp_path / "turned.png", 400, 90), "turn_pairs")
    larger = group(save_leaf(tmp_path / "larger.png", 800, 35), "turn_pairs")
    toothed = group(save_leaf(tmp_path / "toothed.png", 400, 0, teeth=40), "turn_pairs")
    moved = max(np.abs(turned - leaf).sum(), np.abs(larger - leaf).sum())
    assert np.abs(toothed - leaf).sum() > 3 * moved


def test_rings_ignore_position_size_and_turn_but_see_the_lobes(tmp_path):
    path = save_leaf(tmp_path / "leaf.png", 400, 0)
    leaf = group(path, "rings")
    assert len(leaf) == len(RINGS_FEATURES) and np.isfinite(leaf).all()
    image = Image.open(path)
    # the same leaf turned by 35 degrees and moved, and scanned at twice the resolution
    image.rotate(35, translate=(30, -20), resample=Image.BILINEAR).save(tmp_path / "turned.png")
    image.resize((800, 800), Image.BILINEAR).save(tmp_path / "larger.png")
    turned = group(str(tmp_path / "turned.png"), "rings")
    larger = group(str(tmp_path / "larger.png"), "rings")
    assert np.abs(turned - leaf).max() < 0.01 and np.abs(larger - leaf).max() < 0.01
    # harmonics 1..7 of a round leaf are ~0; the lobed one repeats its pattern round a ring
    # twice (the squash) and three times (the lobes)
    disc = group(save_circle(tmp_path / "round.png", 400, 100), "rings").reshape(RINGS, -1)
    lobed = leaf.reshape(RINGS, -1)
    assert disc[:, 1:].max() < 0.01
    assert lobed[:, 2].max() > 0.1 and lobed[:, 3].max() > 0.1


def test_rings_of_a_round_leaf_are_full_inside_and_empty_outside(tmp_path):
    share = group(save_circle(tmp_path / "round.png", 400, 100), "rings").reshape(RINGS, -1)[:, 0]
    # ring i spans radii i / RINGS to (i + 1) / RINGS of RINGS_REACH x sqrt(area)
    outer = (np.arange(RINGS) + 1) / RINGS * RINGS_REACH * math.sqrt(math.pi) * 100
    inner = outer - RINGS_REACH * math.sqrt(math.pi) * 100 / RINGS
    assert share[outer < 95] == pytest.approx(1, abs=0.01)
    assert share[inner > 105] == pytest.approx(0, abs=0.01)


@pytest.mark.parametrize(
    ("group", "max_side"),
    [("disc", DISC_MAX_SIDE_PX), ("widths", DISC_MAX_SIDE_PX), ("blade", BLADE_MAX_SIDE_PX)],
)
def test_a_thread_thin_object_keeps_the_canvas_small(tmp_path, monkeypatch, group, max_side):
    """A one-pixel diagonal line across a large image has almost no area; resizing it to 128 px
    of square-rooted area would make a canvas of about 200,000 px a side."""
    pixels = np.zeros((1600, 1600), np.uint8)
    cv2.line(pixels, (0, 0), (1599, 1599), 255, 1)
    Image.fromarray(pixels).save(tmp_path / "line.png")
    resize = cv2.resize

    def bounded_resize(image, size, **kwargs):
        assert max(size) <= max_side, f"{group} canvas of {size} px"
        return resize(image, size, **kwargs)

    monkeypatch.setattr(cv2, "resize", bounded_resize)
    features = image_features(str(tmp_path / "line.png"), [group])
    assert np.isfinite(list(features.values())).all()


def test_feature_groups_choose_the_columns(tmp_path):
    path = save_rectangle(tmp_path / "leaf.png", (40, 40), (0, 0, 20, 40), (255, 0, 0), 0)
    assert list(image_features(path, ["size"])) == ["log_width", "log_height", "log_aspect"]
    # each group's columns as GROUP_COLUMNS lists them (stage meta weighs the groups by it), for
    # every group `meta.features` accepts
    assert set(GROUP_COLUMNS) == set(get_args(MetaFeature))
    assert list(MEASURES) == list(GROUP_COLUMNS)
    for group, columns in GROUP_COLUMNS.items():
        assert list(image_features(path, [group])) == list(columns), group
    every = image_features(path, list(GROUP_COLUMNS))
    assert list(every) == [column for columns in GROUP_COLUMNS.values() for column in columns]
    colour = image_features(path, ["colour"])
    assert colour["mean_r"] == pytest.approx(0.5) and colour["mean_g"] == 0
    assert colour["std_r"] == pytest.approx(0.5) and colour["std_b"] == 0


def test_the_mask_free_groups_do_not_look_for_the_object(tmp_path, monkeypatch):
    path = save_rectangle(tmp_path / "leaf.png", (40, 40), (0, 0, 20, 40), (255, 0, 0), 0)

    def no_mask(rgb):
        raise AssertionError("the object was looked for")

    monkeypatch.setattr(features_module, "object_mask", no_mask)
    assert len(image_features(path, ["size", "colour"])) == 9
    with pytest.raises(AssertionError, match="looked for"):
        image_features(path, ["size", "shape"])


def test_a_blank_image_has_no_object_and_finite_features(tmp_path):
    path = save_rectangle(tmp_path / "blank.png", (30, 50), (0, 0, 0, 0), 0, 128)
    groups = ["size", "shape", "outline", "turn_pairs", "disc", "widths", "rings", "blade"]
    features = image_features(path, groups)
    assert features["object_share"] == 0 and features["log_outline"] == 0
    assert features["solidity"] == 0 and features["polygon_vertices"] == 0
    drawn = image_features(
        save_rectangle(tmp_path / "leaf.png", (30, 50), (5, 5, 9, 9), 0, 128),
        groups[1:],
    )
    assert list(drawn) == list(features)[3:]  # the same columns with or without an object
    assert all(math.isfinite(value) for value in features.values())
