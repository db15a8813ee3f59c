"""pipeline.data.loaders and samplers: the epoch order, a data stream that depends on neither
the workers nor earlier epochs, the loader settings, and DeviceLoader's batches."""

from __future__ import annotations

import albumentations as A
import numpy as np
import pandas as pd
import pytest
import torch
from helpers.datasets import dataset, write_odd_images
from helpers.params import two_models_with_change
from PIL import Image

from pipeline.config.model_settings import ModelParams
from pipeline.config.params import parse_params
from pipeline.config.paths import FOLDS_FILE
from pipeline.data.loaders import DeviceLoader, LeafDataset, create_loader, loader_kwargs
from pipeline.data.samplers import EpochSampler
from pipeline.data.settings import data_settings
from pipeline.data.tables import load_table
from pipeline.data.transforms import build_transforms
from pipeline.training import device

# ----------------------------------------------------------------------------------------------
# The data stream: a pure function of (seed, epoch, image)


def test_epoch_order_is_a_function_of_seed_and_epoch():
    sampler = EpochSampler(20, seed=3)
    sampler.set_epoch(2)
    second = list(sampler)
    assert sorted(second) == [(i, 2) for i in range(20)]
    sampler.set_epoch(1)
    first = list(sampler)
    sampler.set_epoch(2)
    assert list(sampler) == second  # what came before does not matter
    assert [i for i, _ in first] != [i for i, _ in second]
    other = EpochSampler(20, seed=4)
    other.set_epoch(2)
    assert [i for i, _ in other] != [i for i, _ in second]


@pytest.fixture
def augmented(finished_run) -> LeafDataset:
    """The tiny run's training images with random flips, rotations and colour changes."""
    params = ModelParams(
        image_size=32,
        augment={
            "train": [
                {"name": "RandomResizedCrop", "scale": [0.5, 1.0]},
                {"name": "HorizontalFlip", "p": 0.5},
                {"name": "VerticalFlip", "p": 0.5},
                {"name": "RandomBrightnessContrast", "p": 0.5},
            ]
        },
    )
    folds = load_table(finished_run / FOLDS_FILE)
    paths = [str(finished_run / path) for path in folds.path]
    return LeafDataset(paths, folds.target, build_transforms(params, train=True), 32, seed=5)


def epoch_batches(loader, epoch: int) -> list[torch.Tensor]:
    loader.sampler.set_epoch(epoch)
    return [images for images, _ in loader]


def test_batches_do_not_depend_on_workers_or_on_earlier_epochs(augmented):
    serial = create_loader(augmented, 4, train=True, num_workers=0, seed=1)
    parallel = create_loader(augmented, 4, train=True, num_workers=2, seed=1)
    expected = {epoch: epoch_batches(serial, epoch) for epoch in (1, 2, 3)}
    assert not torch.equal(expected[1][0], expected[2][0])
    # A resumed run starts at a later epoch, in a new process, with any number of workers.
    for epoch in (3, 1, 2):
        got = epoch_batches(parallel, epoch)
        assert len(got) == len(expected[epoch])
        assert all(torch.equal(a, b) for a, b in zip(got, expected[epoch], strict=True)), epoch
    fresh = create_loader(augmented, 4, train=True, num_workers=0, seed=1)
    assert all(torch.equal(a, b) for a, b in zip(epoch_batches(fresh, 2), expected[2], strict=True))


def test_transforms_draw_independently(tmp_path):
    # Seeded alike (as Compose.set_random_seed does), HorizontalFlip would fire exactly when
    # VerticalFlip does; one shared generator per sample keeps them independent.
    image = np.arange(16 * 16 * 3, dtype=np.uint8).reshape(16, 16, 3)
    Image.fromarray(image).save(tmp_path / "a.png")
    flips = A.Compose([A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5)], seed=0)
    dataset = LeafDataset([str(tmp_path / "a.png")] * 40, None, flips, seed=0)
    views = {"none": image, "h": image[:, ::-1], "v": image[::-1], "hv": image[::-1, ::-1]}
    seen = {
        next(name for name, view in views.items() if np.array_equal(dataset[(i, 1)][0], view))
        for i in range(len(dataset))
    }
    assert seen == set(views)


# ----------------------------------------------------------------------------------------------
# Loader and device settings


def test_loader_settings_follow_params_and_device():
    params = parse_params(two_models_with_change("train.loader.num_workers", 2))
    on_cpu = data_settings(params, torch.device("cpu"), cached=False)
    assert on_cpu.cache is None and on_cpu.workers[0] == 2
    cpu = loader_kwargs(on_cpu.loader, on_cpu.device, on_cpu.workers[0])
    assert cpu["pin_memory"] is False and cpu["num_workers"] == 2
    assert loader_kwargs(params.train.loader, torch.device("cuda"), 2)["pin_memory"] is True
    assert loader_kwargs(params.train.loader, torch.device("cpu"), workers=0)["num_workers"] == 0
    assert device.use_channels_last("auto", torch.device("cpu")) is False
    assert device.use_channels_last("auto", torch.device("cuda")) is True
    assert device.use_channels_last(True, torch.device("cpu")) is True
    data = dataset(pd.DataFrame({"path": ["a"] * 6}), ModelParams(), train=True)
    workers = create_loader(data, 4, train=True, seed=0, num_workers=1, prefetch_factor=3)
    assert workers.persistent_workers and workers.prefetch_factor == 3 and workers.drop_last


@pytest.mark.parametrize("channels_last", [False, True])
def test_device_loader_batches_equal_the_normalised_items(tmp_path, channels_last):
    table = write_odd_images(tmp_path / "images")
    hp = ModelParams(image_size=24, augment={"train": [{"name": "HorizontalFlip", "p": 0.5}]})
    normalised = dataset(table, hp, train=True)
    raw = LeafDataset(table.path, None, build_transforms(hp, True, normalize=False), 24, seed=3)
    assert raw[0][0].dtype == torch.uint8 and raw[0][0].shape == (24, 24, 3)
    loader = DeviceLoader(create_loader(raw, 5, train=False, seed=0), "cpu", channels_last)
    assert len(loader) == 1 and loader.batch_size == 5 and loader.dataset is raw
    images, targets = next(iter(loader))
    expected = torch.stack([normalised[index][0] for index in range(5)])
    assert images.dtype == torch.float32 and torch.allclose(images, expected, atol=1e-5)
    assert targets.tolist() == [-1] * 5
    layout = torch.channels_last if channels_last else torch.contiguous_format
    assert images.is_contiguous(memory_format=layout)


def test_a_runs_data_settings_are_decided_once_from_params_and_device():
    params = parse_params(two_models_with_change("train.loader.num_workers", 2))
    params = params.model_copy(update={"cache": params.cache.model_copy(update={"enabled": False})})
    data = data_settings(params, torch.device("cpu"))
    assert data.workers == (2, "train.loader.num_workers")
    assert data.channels_last is False and data.seed == params.base.seed
    assert data.cache is None and data.cache_size is None
