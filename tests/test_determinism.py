"""Same params and data, same results: the pipeline on CPU, and the data stream of training."""

from __future__ import annotations

import albumentations as A
import numpy as np
import pytest
import torch
from conftest import run_stages
from PIL import Image

from pipeline.config.model_settings import ModelParams
from pipeline.config.paths import ENSEMBLE_DIR, FOLDS_FILE, SUBMISSION_FILE
from pipeline.data.loaders import LeafDataset, create_loader
from pipeline.data.samplers import EpochSampler
from pipeline.data.tables import load_table
from pipeline.data.transforms import build_transforms


def test_two_runs_give_identical_logits_and_submission(finished_run, tmp_path, tiny_params):
    # finished_run is the first run (shared with other tests); this is the second.
    run_stages(tmp_path, tiny_params)
    names = sorted(p.name for p in (finished_run / ENSEMBLE_DIR).glob("*.npy"))
    assert names == sorted(p.name for p in (tmp_path / ENSEMBLE_DIR).glob("*.npy")) != []
    for name in names:
        first = np.load(finished_run / ENSEMBLE_DIR / name)
        again = np.load(tmp_path / ENSEMBLE_DIR / name)
        assert np.array_equal(first, again), name
    submission = (finished_run / SUBMISSION_FILE).read_bytes()
    assert (tmp_path / SUBMISSION_FILE).read_bytes() == submission


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
