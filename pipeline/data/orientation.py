"""Whether a dataset's leaves stand upright, and the augmentation that keeps them upright.

Scans and silhouettes often show every leaf apex up; field photos and the embedded synthetic
set show them at any angle. Turning or flipping an upright leaf upside down makes views the
test set never holds: on the leaf-silhouettes set it cost the network 17 points of accuracy
(0.74 against 0.57, BENCHMARKS.md). Stage cache measures it once, from the training images' mean
object mask: upright leaves make that mean tall, so turning it by 90 degrees changes it far
more than mirroring it left to right does; leaves at any angle make a round mean that neither
changes beyond noise.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import cv2
import numpy as np

from pipeline.config.model_settings import ModelParams
from pipeline.data.images import fit_long_side, pad_to_square
from pipeline.data.tables import corrupt, read_input_json
from pipeline.ensemble.contours import object_mask

MASK_SIZE = 64  # the side the masks are averaged at: the mean's shape, not its detail, counts
# Upright: the mean mask turned by 90 degrees differs from itself by at least MIN_TURN of its
# mass, and by TURN_TO_MIRROR times what mirroring it does (mirroring measures the noise, since
# a leaf's two halves are alike). Silhouettes: 0.52 and 0.07; synthetic sets: 0.09 and 0.09.
MIN_TURN = 0.2
TURN_TO_MIRROR = 3.0
# What an upright policy leaves out: the transforms and TTA views that turn the apex away from up.
TURNING_TRANSFORMS = ("VerticalFlip", "RandomRotate90", "Transpose")
TURNING_VIEWS = ("vflip", "rot90", "rot180", "rot270", "transpose")


def centred_mask(image: np.ndarray) -> np.ndarray:
    """The object mask (0 or 1) of an (H, W, 3) uint8 image fitted to MASK_SIZE, centred on a
    square of zeros."""
    mask = object_mask(fit_long_side(image, MASK_SIZE)).astype(np.uint8)
    return pad_to_square(mask, MASK_SIZE, cv2.BORDER_CONSTANT)


def measure_orientation(images: Iterable[np.ndarray]) -> dict:
    """How the mean object mask of `images` changes when turned and when mirrored (each as a
    share of its mass), and whether that makes the leaves upright."""
    total, count = np.zeros((MASK_SIZE, MASK_SIZE)), 0
    for image in images:
        total += centred_mask(image)
        count += 1
    mass = max(total.sum(), 1e-12)
    turn = float(np.abs(total - np.rot90(total)).sum() / mass)
    mirror = float(np.abs(total - total[:, ::-1]).sum() / mass)
    upright = turn >= MIN_TURN and turn >= TURN_TO_MIRROR * mirror
    return {"images": count, "turn": round(turn, 4), "mirror": round(mirror, 4), "upright": upright}


def read_orientation(path: Path) -> dict:
    """Stage cache's measurement (`measure_orientation`), checked."""
    found = read_input_json(path, "cache")
    if not (isinstance(found, dict) and {"turn", "mirror", "upright"} <= found.keys()):
        raise corrupt(path, "expected a JSON object with turn, mirror and upright", "cache")
    return found


def orient_settings(hp: ModelParams, orientation: dict) -> tuple[ModelParams, str]:
    """`hp` with `augment.upright` decided (true or false), without the turning transforms and
    TTA views when true; and a line saying what was decided and why ('' when set false)."""
    setting = hp.augment.upright
    upright = orientation["upright"] if setting == "auto" else setting
    reason = describe_orientation(orientation) if setting == "auto" else "augment.upright is true"
    if not upright:
        augment = hp.augment.model_copy(update={"upright": False})
        return hp.model_copy(update={"augment": augment}), (
            f"{reason}; every transform kept" if setting == "auto" else ""
        )
    train = [spec for spec in hp.augment.train if spec.name not in TURNING_TRANSFORMS]
    views = [view for view in hp.tta.views if view not in TURNING_VIEWS] or ["identity"]
    dropped = [spec.name for spec in hp.augment.train if spec.name in TURNING_TRANSFORMS]
    dropped += [f"TTA {view}" for view in hp.tta.views if view in TURNING_VIEWS]
    oriented = hp.model_copy(
        update={
            "augment": hp.augment.model_copy(update={"upright": True, "train": train}),
            "tta": hp.tta.model_copy(update={"views": views}),
        }
    )
    left_out = f"left out: {', '.join(dropped)}" if dropped else "the policy turns none of them"
    return oriented, f"{reason}; {left_out}"


def describe_orientation(orientation: dict) -> str:
    state = "stand upright" if orientation["upright"] else "lie at any angle"
    return (
        f"the training leaves {state} (their mean mask turned 90 degrees differs by "
        f"{orientation['turn']:.2f}, mirrored by {orientation['mirror']:.2f})"
    )
