"""The geometry of pipeline.data.batch_augment: each transform's output-to-source map, their
composition into one 2x3 matrix per image, and the one bilinear resampling that applies it.

Coordinates are centred on the square the image is fitted to, from -0.5 to 0.5, x then y.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from pipeline.config.model_settings import TransformSpec
from pipeline.data.batch_colour import between


def resolved_args(transform) -> dict:
    """The ranges an albumentations transform draws from, as it resolved its arguments (so a
    number means what albumentations makes of it: +-x for RandomBrightnessContrast's limits, x
    itself for Affine's scale), each a (low, high) pair."""
    name = type(transform).__name__
    if name == "RandomResizedCrop":
        return {"scale": transform.scale, "ratio": transform.ratio}
    if name == "Affine":
        shift = transform.translate_percent or {"x": (0.0, 0.0), "y": (0.0, 0.0)}
        return {
            "scale_x": transform.scale["x"],
            "scale_y": transform.scale["y"],
            "keep_ratio": transform.keep_ratio,
            "rotate": transform.rotate,
            "shift_x": shift["x"],
            "shift_y": shift["y"],
            "border_mode": transform.border_mode,
            "fill": transform.fill,
        }
    if name == "ColorJitter":
        keys = ("brightness", "contrast", "saturation", "hue")
        return {key: tuple(getattr(transform, key)) for key in keys}
    if name == "RandomBrightnessContrast":
        return {"brightness": transform.brightness_limit, "contrast": transform.contrast_limit}
    return {}  # flips, Transpose, RandomRotate90: only p


@dataclass(frozen=True)
class Step:
    """One transform of the policy: its name, probability and resolved ranges."""

    name: str
    p: float
    args: dict

    @classmethod
    def from_spec(cls, spec: TransformSpec, image_size: int) -> Step:
        from pipeline.data.transforms import create_transform  # albumentations validates the args

        transform = create_transform(spec, image_size)
        return cls(spec.name, float(transform.p), resolved_args(transform))


def rotation(angle: torch.Tensor) -> torch.Tensor:
    """(B, 2, 2) rotation matrices by `angle` radians."""
    cos, sin = angle.cos(), angle.sin()
    return torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)


def diagonal(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    zero = torch.zeros_like(x)
    return torch.stack([torch.stack([x, zero], -1), torch.stack([zero, y], -1)], -2)


def inverse_map(step: Step, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, 2, 2) matrix A and (B, 2) offset b taking a point of the step's output to its input,
    in centred square coordinates ([-0.5, 0.5], x then y); `u` is (B, DRAWS)."""
    batch = len(u)
    one = torch.ones(batch, device=u.device)
    if step.name == "RandomResizedCrop":
        low, high = step.args["scale"]
        area = between(u[:, 1], low, high)
        log_ratio = between(u[:, 2], *(math.log(r) for r in step.args["ratio"]))
        width = (area * log_ratio.exp()).sqrt().clamp(max=1.0)
        height = (area / log_ratio.exp()).sqrt().clamp(max=1.0)
        centre = torch.stack([(u[:, 3] - 0.5) * (1 - width), (u[:, 4] - 0.5) * (1 - height)], -1)
        return diagonal(width, height), centre
    zero = torch.zeros(batch, 2, device=u.device)
    if step.name == "HorizontalFlip":
        return diagonal(-one, one), zero
    if step.name == "VerticalFlip":
        return diagonal(one, -one), zero
    if step.name == "Transpose":
        return torch.stack(
            [torch.stack([zero[:, 0], one], -1), torch.stack([one, zero[:, 0]], -1)], -2
        ), zero
    if step.name == "RandomRotate90":
        quarter = (u[:, 1] * 4).floor().clamp(max=3)
        # cos and sin of whole quarter turns, exactly (no host-made table: see device_constant)
        cos = (quarter == 0).float() - (quarter == 2).float()
        sin = (quarter == 1).float() - (quarter == 3).float()
        return torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2), zero
    # Affine: output = R S input + T about the centre, so input = S^-1 R^-1 (output - T), with
    # R^-1 a turn by +angle here because the y axis points down.
    scale_x = between(u[:, 1], *step.args["scale_x"])
    scale_y = scale_x if step.args["keep_ratio"] else between(u[:, 5], *step.args["scale_y"])
    angle = between(u[:, 2], *step.args["rotate"]) * (math.pi / 180)
    shift = torch.stack(
        [between(u[:, 3], *step.args["shift_x"]), between(u[:, 4], *step.args["shift_y"])], -1
    )
    matrix = diagonal(1 / scale_x, 1 / scale_y) @ rotation(angle)  # y points down
    return matrix, -(matrix @ shift[:, :, None])[:, :, 0]


def compose(steps: list[Step], u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The output-to-source map of the geometric steps applied in order, where they fire."""
    batch = u.shape[0]
    matrix = torch.eye(2, device=u.device).expand(batch, 2, 2)
    offset = torch.zeros(batch, 2, device=u.device)
    for k, step in enumerate(steps):
        draws = u[:, k]
        fires = (draws[:, 0] < step.p)[:, None]
        a, b = inverse_map(step, draws)
        a = torch.where(fires[:, :, None], a, torch.eye(2, device=u.device))
        b = torch.where(fires, b, 0.0)
        # source(q) = M (A q + b) + t: this step's inverse runs before the earlier steps'.
        matrix, offset = matrix @ a, (matrix @ b[:, :, None])[:, :, 0] + offset
    return matrix, offset


# -- sampling -----------------------------------------------------------------------------


def output_points(size: int, device: torch.device) -> torch.Tensor:
    """(size * size, 2) centres of the output pixels in centred coordinates, x then y."""
    centres = (torch.arange(size, device=device, dtype=torch.float32) + 0.5) / size - 0.5
    y, x = torch.meshgrid(centres, centres, indexing="ij")
    return torch.stack([x.reshape(-1), y.reshape(-1)], -1)


def sample(
    images: torch.Tensor,
    sizes: torch.Tensor,
    matrix: torch.Tensor,
    offset: torch.Tensor,
    out: int,
    keep_aspect: bool,
    fill: float | None = None,
) -> torch.Tensor:
    """Resample cached images through each one's output-to-source map: (B, 3, out, out) in [0, 1].

    Args:
        images: (B, S, S, 3) uint8 cache slots, each image in its top-left (height, width).
        sizes: (B, 2) int64 heights and widths.
        matrix, offset: `compose`'s map, in the coordinates of the square the image is fitted
            to (`keep_aspect`: its long side, centred, the border replicated as
            `images.pad_to_square` pads; else stretched to the square).
        out: the output side (`image_size`).
        fill: the value (0-255) of points mapped outside that square (Affine's border_mode 0);
            None: replicate the border there too.
    """
    slot = images.shape[1]
    source = output_points(out, images.device) @ matrix.transpose(1, 2) + offset[:, None, :]
    height, width = sizes[:, 0].float()[:, None], sizes[:, 1].float()[:, None]
    if keep_aspect:
        side = torch.maximum(height, width)
        left, top = ((side - width) / 2).floor(), ((side - height) / 2).floor()
        x, y = (source[..., 0] + 0.5) * side - left, (source[..., 1] + 0.5) * side - top
    else:
        x, y = (source[..., 0] + 0.5) * width, (source[..., 1] + 0.5) * height
    # Clamping to the outer pixel centres replicates the image's border, not the slot's.
    x = torch.minimum(x.clamp(min=0.5), width - 0.5)
    y = torch.minimum(y.clamp(min=0.5), height - 0.5)
    grid = (torch.stack([x, y], -1) / slot * 2 - 1).view(len(images), out, out, 2)
    planes = images.permute(0, 3, 1, 2).float()
    result = F.grid_sample(
        planes, grid, mode="bilinear", padding_mode="border", align_corners=False
    )
    if fill is not None:
        outside = (source.abs() > 0.5).any(-1).view(len(images), 1, out, out)
        result = torch.where(outside, float(fill), result)
    return result / 255
