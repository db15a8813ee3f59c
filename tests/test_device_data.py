"""The device data path on CPU tensors: which path a cell takes, batches that follow the workers'
order and counts, the cache held once, and stage train through it, end to end and resumed."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from helpers.training_runs import cell_outputs, write_params

from pipeline.config.model_settings import ModelParams
from pipeline.config.params import load_params, resolve_cache_size, resolve_crop_to_leaf
from pipeline.config.paths import FOLDS_FILE, PREPARED_TEST
from pipeline.data.device_data import ResidentImages, augment_path, fold_data
from pipeline.data.images import load_image_cache
from pipeline.data.loaders import build_loaders, fold_tables
from pipeline.data.settings import data_settings
from pipeline.io.console import PipelineError
from pipeline.stages import train

CPU, CUDA = torch.device("cpu"), torch.device("cuda")
BATCHABLE = {"train": [{"name": "HorizontalFlip", "p": 0.5}], "eval": []}


def model_params(train: list[dict]) -> ModelParams:
    return ModelParams(augment={"train": train, "eval": []})


def test_auto_takes_the_device_path_on_any_device_when_every_transform_has_a_batch_form():
    hp = model_params(BATCHABLE["train"])
    assert augment_path("auto", CUDA, hp, cache_on=True)[0] == "device"
    assert augment_path("auto", CPU, hp, cache_on=True) == (
        "device",
        "auto: the whole policy runs in batches on the cpu",
    )
    assert augment_path("workers", CUDA, hp, cache_on=True)[0] == "workers"
    assert augment_path("device", CPU, hp, cache_on=True)[0] == "device"


def test_auto_names_what_keeps_it_on_the_workers():
    noisy = model_params([{"name": "GaussNoise"}])
    path, why = augment_path("auto", CUDA, noisy, cache_on=True)
    assert path == "workers" and "GaussNoise has no batch form" in why
    path, why = augment_path("auto", CUDA, model_params([]), cache_on=False)
    assert path == "workers" and "cache.enabled is false" in why
    with pytest.raises(ValueError, match="augment_on is device, but GaussNoise"):
        augment_path("device", CUDA, noisy, cache_on=True)


def read_tables() -> tuple[pd.DataFrame, pd.DataFrame]:
    return pd.read_csv(FOLDS_FILE), pd.read_csv(PREPARED_TEST)


def both_paths(run_copy) -> tuple:
    """Fold 0 of the tiny run through the device path and the workers path, and the device
    path's choice, its reason, the model's settings and folds.csv."""
    write_params(run_copy, run_copy, loader={"augment_on": "device"})
    params = load_params()
    hp = params.train.for_model("d2l_resnet11")
    folds, test = read_tables()
    data = data_settings(params, CPU)
    batches, path, why = fold_data(hp, fold_tables(folds, test, 0), data)
    loaders = build_loaders(hp, fold_tables(folds, test, 0), data)
    return batches, loaders, path, why, hp, folds


def test_device_batches_follow_the_workers_order_counts_and_targets(run_copy):
    batches, loaders, path, why, hp, folds = both_paths(run_copy)
    assert path == "device" and why == "train.loader.augment_on: device"
    for name in ("train", "valid", "test"):
        assert len(batches[name]) == len(loaders[name]), name
        assert batches[name].num_images == loaders[name].num_images, name
        assert batches[name].batch_size == loaders[name].batch_size, name
    for epoch in (1, 2):
        batches["train"].sampler.set_epoch(epoch)
        loaders["train"].sampler.set_epoch(epoch)
        ours = [targets for _, targets in batches["train"]]
        theirs = [targets for _, targets in loaders["train"]]
        assert [t.tolist() for t in ours] == [t.tolist() for t in theirs]
    valid = torch.cat([targets for _, targets in batches["valid"]])
    assert valid.tolist() == folds.target[folds.fold == 0].tolist()
    images, _ = next(iter(batches["test"]))
    assert images.shape[1:] == (3, hp.image_size, hp.image_size)


def test_unaugmented_device_batches_are_the_workers_pixels(run_copy):
    """Evaluation does no more than fit and normalise: the same input on both paths, up to
    float rounding (the cache already holds the images at image_size)."""
    batches, loaders, *_ = both_paths(run_copy)
    for (ours, _), (theirs, _) in zip(batches["valid"], loaders["valid"], strict=True):
        torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)


def test_the_cache_is_shrunk_once_to_the_models_size(run_copy):
    params = load_params()
    cache = load_image_cache(resolve_cache_size(params), resolve_crop_to_leaf(params))
    resident = ResidentImages(cache, CPU, image_size=resolve_cache_size(params) // 2)
    side = resolve_cache_size(params) // 2
    assert resident.images.shape == (len(cache), side, side, 3)
    assert resident.images.dtype == torch.uint8
    assert resident.sizes.max().item() == side


def test_asking_for_the_device_path_with_an_unbatchable_policy_is_a_clear_error(run_copy):
    write_params(run_copy, run_copy, loader={"augment_on": "device"})
    write_params(run_copy, run_copy, augment={"train": [{"name": "GaussNoise"}], "eval": []})
    params = load_params()
    tables = fold_tables(*read_tables(), 0)
    with pytest.raises(PipelineError, match="GaussNoise has no batch form.*augment_on: auto"):
        hp = params.train.for_model("d2l_resnet11")
        fold_data(hp, tables, data_settings(params, CPU))


def test_stage_train_trains_and_predicts_through_the_device_path(run_copy, capsys):
    write_params(run_copy, run_copy, loader={"augment_on": "device"}, epochs=2)
    train.main(["--model", "d2l_resnet11", "--fold", "0"])
    out = capsys.readouterr().out
    assert "augmented on the device: train.loader.augment_on: device" in out
    outputs = cell_outputs(run_copy)
    folds = pd.read_csv(FOLDS_FILE)
    assert np.array_equal(outputs["oof_rows"], np.flatnonzero(folds.fold == 0))
    assert np.isfinite(outputs["oof_logits"]).all() and np.isfinite(outputs["test_logits"]).all()
    assert len(outputs["test_logits"]) == len(pd.read_csv(PREPARED_TEST))
