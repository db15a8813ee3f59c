"""What a run's batches are built from besides the cell's settings, decided once per run.

Stage train (and stage pseudo, per cell) resolves them from params.yaml and the device here;
the loaders, the device data path and the model's memory format then read the decisions
instead of deciding again.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pipeline.config.params import resolve_cache_size, resolve_crop_to_leaf
from pipeline.config.schema import LoaderParams, Params
from pipeline.data.images import ImageCache, load_image_cache
from pipeline.training.device import resolve_num_workers, use_channels_last


@dataclass(frozen=True)
class DataSettings:
    """The data settings of one run on one device.

    Attributes:
        device: where the batches go.
        seed: base.seed; the data stream is a pure function of it, the epoch and the image.
        loader: train.loader.
        workers: DataLoader workers for this machine, and why (resolve_num_workers).
        channels_last: batches, and so the model, in channels_last memory format.
        cache: stage cache's images, or None when cache.enabled is false or `cached` is False.
    """

    device: torch.device
    seed: int
    loader: LoaderParams
    workers: tuple[int, str]
    channels_last: bool
    cache: ImageCache | None

    @property
    def cache_size(self) -> int | None:
        """The side the cached images were fitted to (its manifest's); None: no cache."""
        return self.cache.size if self.cache is not None else None


def data_settings(params: Params, device: torch.device, cached: bool = True) -> DataSettings:
    """The data settings of params.yaml for batches that go to `device`.

    Args:
        cached: read stage cache's images (when cache.enabled); False for images from
            elsewhere (`leaf predict`), which are decoded from their files.

    Raises:
        PipelineError: the cache is on but was not built, or was built with other settings.
    """
    return DataSettings(
        device=device,
        seed=params.base.seed,
        loader=params.train.loader,
        workers=resolve_num_workers(params.train.loader.num_workers, device),
        channels_last=use_channels_last(params.train.channels_last, device),
        cache=(
            load_image_cache(resolve_cache_size(params), resolve_crop_to_leaf(params))
            if cached
            else None
        ),
    )
