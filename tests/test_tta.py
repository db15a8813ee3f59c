"""Test-time augmentation: the views, their averaging, and `train.predict` using both."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch
from helpers.run_if import RunIf
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from pipeline.config.model_settings import GEOMETRIC_VIEWS, ModelParams, TtaParams, view_scale
from pipeline.training.tta import apply_view, average_views, predict_logits

INVERSE = {
    "identity": "identity",
    "hflip": "hflip",
    "vflip": "vflip",
    "rot90": "rot270",
    "rot180": "rot180",
    "rot270": "rot90",
    "transpose": "transpose",
}


@pytest.fixture
def batch() -> torch.Tensor:
    return torch.randn(3, 3, 12, 12, generator=torch.Generator().manual_seed(0))


def test_every_geometric_view_has_an_inverse():
    assert set(INVERSE) == set(GEOMETRIC_VIEWS)


@pytest.mark.parametrize("view", GEOMETRIC_VIEWS)
def test_the_inverse_view_brings_the_batch_back(batch, view):
    moved = apply_view(batch, view)
    assert moved.shape == batch.shape
    assert torch.equal(apply_view(moved, INVERSE[view]), batch)


def centred_square(size: int = 40, side: int = 12, border: float = -2.0) -> torch.Tensor:
    """A (1, 3, size, size) batch: value 1 in a centred square, `border` elsewhere."""
    image = torch.full((1, 3, size, size), border)
    start = (size - side) // 2
    image[..., start : start + side, start : start + side] = 1.0
    return image


def square_stats(image: torch.Tensor, border: float = -2.0) -> tuple[float, float, float]:
    """(area, centroid row, centroid column) of the square in channel 0, counting each pixel
    by how much of it is square (interpolation blends the edges)."""
    inside = ((image[0, 0] - border) / (1.0 - border)).clamp(0, 1)
    rows, cols = torch.meshgrid(
        torch.arange(image.shape[-2]), torch.arange(image.shape[-1]), indexing="ij"
    )
    area = inside.sum().item()
    return area, (rows * inside).sum().item() / area, (cols * inside).sum().item() / area


@pytest.mark.parametrize("view", ["scale0.5", "scale0.8", "scale0.9", "scale1.1", "scale1.5"])
def test_scale_views_keep_the_shape_and_the_centre(view):
    image = centred_square()
    zoomed = apply_view(image, view)
    assert zoomed.shape == image.shape
    area, row, col = square_stats(image)
    zoomed_area, zoomed_row, zoomed_col = square_stats(zoomed)
    assert zoomed_row == pytest.approx(row, abs=0.6) and zoomed_col == pytest.approx(col, abs=0.6)
    factor = view_scale(view)
    # The square's side scales by 1 / factor (to the pixel).
    assert zoomed_area == pytest.approx(area / factor**2, rel=0.1)
    assert (zoomed_area > area) == (factor < 1)


def test_zooming_out_pads_with_the_border_colour():
    image = centred_square(border=-2.0)
    zoomed = apply_view(image, "scale2.0")
    corners = zoomed[..., [0, 0, -1, -1], [0, -1, 0, -1]]
    assert torch.allclose(corners, torch.tensor(-2.0))
    assert torch.allclose(apply_view(torch.full((2, 3, 9, 9), 0.7), "scale1.3"), torch.tensor(0.7))


def test_scale_one_is_the_identity(batch):
    assert torch.equal(apply_view(batch, "scale1.0"), batch)


@pytest.mark.parametrize(
    ("view", "factor"), [("scale0.9", 0.9), ("scale1.25", 1.25), ("scale2", 2.0), ("rot90", None)]
)
def test_view_scale_reads_the_factor(view, factor):
    assert view_scale(view) == factor


@pytest.mark.parametrize("view", ["scale3", "scale0.1", "scale", "scale-1", "zoom0.9", "Hflip"])
def test_unknown_views_name_the_allowed_ones(view):
    with pytest.raises(ValueError, match=r"unknown TTA view .*allowed: identity, hflip.*scale<f>"):
        view_scale(view)


def test_average_views_in_logit_and_probability_space():
    logits = torch.randn(4, 5, 7, generator=torch.Generator().manual_seed(1)) * 5
    assert torch.allclose(average_views(logits, "logits"), logits.mean(0))
    mean_softmax = logits.softmax(-1).mean(0)
    assert torch.allclose(average_views(logits, "probs").exp(), mean_softmax, atol=1e-6)


def test_probability_average_stays_finite_when_probabilities_underflow():
    logits = torch.tensor([[[0.0, -300.0, 5.0]], [[0.0, -400.0, 5.0]]])
    averaged = average_views(logits, "probs")
    assert torch.isfinite(averaged).all() and averaged.argmax() == 2


def test_a_list_of_views_is_shorthand_for_views():
    assert ModelParams(tta=["identity", "vflip"]).tta == TtaParams(views=["identity", "vflip"])
    assert ModelParams().tta == TtaParams(views=["identity"], average="logits")


@pytest.mark.parametrize("space", ["logits", "probs"])
def test_predict_averages_the_views_for_every_image(batch, space):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 12 * 12, 4))
    loader = DataLoader(TensorDataset(batch, torch.zeros(len(batch))), batch_size=2)
    tta = TtaParams(views=["identity", "hflip", "scale0.9"], average=space)
    logits = predict_logits(model, loader, contextlib.nullcontext, tta)

    with torch.no_grad():
        views = torch.stack([model(apply_view(batch, view)) for view in tta.views])
    expected = views.mean(0) if space == "logits" else views.softmax(-1).mean(0).log()
    assert logits.shape == (len(batch), 4)
    np.testing.assert_allclose(logits, expected.numpy(), rtol=1e-5, atol=1e-6)
    assert not np.allclose(logits, views[0].numpy(), atol=1e-3)  # the views do change it


@pytest.mark.gpu
@RunIf(min_gpus=1)
def test_views_on_a_channels_last_cuda_batch_match_the_cpu(batch):
    on_gpu = batch.cuda().contiguous(memory_format=torch.channels_last)
    for view in [*GEOMETRIC_VIEWS, "scale0.9", "scale1.1"]:
        expected = apply_view(batch, view)
        torch.testing.assert_close(apply_view(on_gpu, view).cpu(), expected, atol=1e-5, rtol=1e-5)
