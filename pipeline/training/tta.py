"""Test-time augmentation: the views of a batch, their average, and prediction with them."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from pipeline.config.model_settings import TtaParams, view_scale
from pipeline.io.console import progress
from pipeline.training import distributed


def zoom(batch: torch.Tensor, factor: float) -> torch.Tensor:
    """Zoom an (N, C, H, W) batch about its centre, keeping its shape.

    Args:
        batch: images, normalised or not.
        factor: below 1 zooms in (the centre `factor` of each side, enlarged back); above 1
            zooms out (shrunk by `factor`, then padded by repeating the border pixels, the
            way `keep_aspect` pads, so the background stays the background).
    """
    height, width = batch.shape[-2:]
    if factor < 1:
        h, w = max(1, round(height * factor)), max(1, round(width * factor))
        top, left = (height - h) // 2, (width - w) // 2
        crop = batch[..., top : top + h, left : left + w]
        return F.interpolate(crop, size=(height, width), mode="bilinear", align_corners=False)
    if factor > 1:
        h, w = max(1, round(height / factor)), max(1, round(width / factor))
        small = F.interpolate(batch, size=(h, w), mode="bilinear", antialias=True)
        top, left = (height - h) // 2, (width - w) // 2
        padding = (left, width - w - left, top, height - h - top)
        return F.pad(small, padding, mode="replicate")
    return batch


def apply_view(batch: torch.Tensor, view: str) -> torch.Tensor:
    """One test-time augmentation view of an (N, C, H, W) batch.

    Flips, rotations and `transpose` need square images (as `image_size` makes them);
    `scale<f>` views zoom about the centre (see `zoom`).
    """
    factor = view_scale(view)
    if factor is not None:
        return zoom(batch, factor)
    if view == "identity":
        return batch
    if view == "hflip":
        return batch.flip(3)
    if view == "vflip":
        return batch.flip(2)
    if view == "transpose":
        return batch.transpose(2, 3)
    return torch.rot90(batch, k=int(view[3:]) // 90, dims=(2, 3))


def average_views(logits: torch.Tensor, space: str) -> torch.Tensor:
    """Mean of (views, N, classes) logits over the views, as stage `ensemble` averages models.

    Args:
        logits: one model's logits for every view, stacked.
        space: `logits` averages raw logits; `probs` averages softmax probabilities and
            returns their log (a log-sum-exp, so probabilities that underflow stay finite).
    """
    if space == "probs":
        return torch.logsumexp(logits.float().log_softmax(-1), dim=0) - math.log(len(logits))
    return logits.mean(0)


@torch.no_grad()
def predict_logits(model, loader, autocast, tta: TtaParams, desc: str = "predict") -> np.ndarray:
    """Logits for every image in loader order, averaged over `tta.views` in `tta.average`'s
    space (so log-probabilities when that is `probs`). The loader yields batches on the
    model's device, in its memory format (DeviceLoader, DeviceBatches). They stay there until
    the pass ends: one copy to the host, and no step waits for it."""
    model.eval()
    outputs = []
    for images, _ in progress(loader, desc=desc, leave=False, unit="batch"):
        with autocast():
            views = torch.stack([model(apply_view(images, v)).float() for v in tta.views])
        outputs.append(average_views(views, tta.average))
    return torch.cat(outputs).cpu().numpy()


def predict_gathered(
    model: nn.Module,
    loader: DataLoader,
    autocast: Callable,
    tta: TtaParams,
    desc: str,
) -> np.ndarray:
    """`predict_logits`, on this process's shard of the loader's images under torchrun; every
    process gets the logits of all of them, in dataset order."""
    logits = predict_logits(model, loader, autocast, tta, desc)
    return distributed.gather_rows(logits)
