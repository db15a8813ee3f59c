"""Stage cache: every image decoded once into a memory-mapped array that training reads. Its params
and when DVC rebuilds it: test_cache_params.py."""

from __future__ import annotations

import copy
import json
import pickle
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from helpers.datasets import dataset, write_odd_images

from pipeline.config.model_settings import ModelParams
from pipeline.config.params import load_params, resolve_cache_size, resolve_crop_to_leaf
from pipeline.config.paths import (
    CACHE_DIR,
    CACHE_IMAGES,
    CACHE_MANIFEST,
    CACHE_ORIENTATION,
    FOLDS_FILE,
    PREPARED_TEST,
)
from pipeline.data.images import ImageCache, load_image_cache, read_cache_manifest
from pipeline.data.loaders import (
    LeafDataset,
    build_loaders,
    fold_tables,
)
from pipeline.data.network_images import write_images
from pipeline.data.orientation import read_orientation
from pipeline.data.settings import data_settings
from pipeline.data.tables import load_table
from pipeline.data.transforms import IMAGENET_STD
from pipeline.io.console import PipelineError
from pipeline.models.d2l_resnet import D2LResNet
from pipeline.stages import cache, generate, prepare, split, train
from pipeline.training import device

# One grey level of a uint8 image, after normalisation (the largest over the channels).
GREY_LEVEL = 1 / 255 / min(IMAGENET_STD)


def write_params(params: dict) -> None:
    Path("params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.fixture
def prepared(tmp_path, tiny_params, monkeypatch) -> dict:
    """The tiny project in tmp_path (the working directory) after generate, prepare, split."""
    monkeypatch.chdir(tmp_path)
    write_params(tiny_params)
    generate.main([])
    prepare.main([])
    split.main([])
    return tiny_params


@pytest.fixture
def cached(prepared) -> dict:
    """`prepared`, plus the cache stage's output with the tiny params (32 px)."""
    cache.main([])
    return prepared


def built_cache(size: int) -> ImageCache:
    """Stage cache's images, asked for at `size` with the params' crop."""
    return load_image_cache(size, resolve_crop_to_leaf(load_params()))


def assert_same_tensors(decoded: LeafDataset, from_cache: LeafDataset) -> None:
    for epoch in (0, 1):
        for index in range(len(decoded)):
            expected, _ = decoded[(index, epoch)]
            actual, _ = from_cache[(index, epoch)]
            assert actual.shape == expected.shape
            assert (actual - expected).abs().max() <= GREY_LEVEL + 1e-5, index


# ----------------------------------------------------------------------------------------------
# Contents: what training reads from the cache equals what it decodes from the files


@pytest.mark.parametrize("keep_aspect", [True, False])
def test_cached_tensors_equal_the_decoded_ones(prepared, keep_aspect):
    # Stretched (keep_aspect: false), a leaf cut from its frame is not square, so it would be
    # stretched from its fitted copy (next test); whole frames are square here.
    prepared["train"]["defaults"]["crop_to_leaf"] = keep_aspect
    write_params(prepared)
    cache.main([])
    hp = (
        load_params()
        .train.for_model("d2l_resnet11")
        .model_copy(update={"keep_aspect": keep_aspect})
    )
    images = built_cache(resolve_cache_size(load_params()))
    folds = load_table(FOLDS_FILE)
    for train_mode in (False, True):  # eval fit, and the seeded train augmentation
        decoded = dataset(folds, hp, train=train_mode)
        from_cache = dataset(folds, hp, train=train_mode, images=images.select(folds))
        assert_same_tensors(decoded, from_cache)


def test_any_shape_and_mode_reads_back_as_decoded(tmp_path):
    # With keep_aspect: false a non-square image is stretched from the fitted copy instead, so
    # its short side has lost resolution; Classify Leaves images are square.
    table = write_odd_images(tmp_path / "images")
    index = write_images(table, 32, tmp_path / "images.npy")
    assert index[["height", "width"]].max().max() == 32  # the long side, aspect kept
    assert (
        dict(zip(index.path.map(lambda p: Path(p).name), index.width, strict=True))["wide.jpg"]
        == 32
        and index.height.min() < 32
    )
    images = ImageCache(tmp_path / "images.npy", index.assign(row=np.arange(len(index))))
    hp = ModelParams(image_size=32)
    assert_same_tensors(
        dataset(table, hp, train=False), dataset(table, hp, train=False, images=images)
    )


def test_images_cut_to_the_leaf_read_back_as_decoded(prepared, tmp_path):
    """With crop_to_leaf the cache holds each leaf cut from its frame, as a file read without
    the cache is cut."""
    folds = load_table(FOLDS_FILE)
    whole = write_images(folds, 32, tmp_path / "whole.npy")
    cut = write_images(folds, 32, tmp_path / "cut.npy", crop_to_leaf=True)
    assert (whole[["height", "width"]] == 32).all().all()  # the synthetic images are square
    assert (cut[["height", "width"]].min(axis=1) < 32).mean() > 0.5  # most leaves are not
    images = ImageCache(tmp_path / "cut.npy", cut.assign(row=np.arange(len(cut))))
    hp = ModelParams(image_size=32, crop_to_leaf=True)
    for train_mode in (False, True):
        assert_same_tensors(
            dataset(folds, hp, train=train_mode),
            dataset(folds, hp, train=train_mode, images=images),
        )


def test_cache_is_memory_mapped_and_opened_in_each_process(cached):
    array = np.load(CACHE_IMAGES, mmap_mode="r")
    folds, test = load_table(FOLDS_FILE), load_table(PREPARED_TEST)
    assert array.shape == (len(folds) + len(test), 32, 32, 3) and array.dtype == np.uint8
    images = built_cache(32).select(test)
    first = images[0]
    assert isinstance(images._array, np.memmap)
    assert first.dtype == np.uint8 and first.flags.owndata  # a copy, not a view of the map
    shipped = pickle.loads(pickle.dumps(images))  # what a DataLoader worker receives
    assert shipped._array is None and np.array_equal(shipped[0], first)


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/self/status")
def test_reading_the_whole_cache_keeps_resident_memory_flat(tmp_path):
    def mapped_file_kib() -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("RssFile:"):
                return int(line.split()[1])
        raise AssertionError("no RssFile in /proc/self/status")

    rows, size = 640, 128  # 30 MiB
    array = np.lib.format.open_memmap(
        tmp_path / "a.npy", mode="w+", dtype=np.uint8, shape=(rows, size, size, 3)
    )
    array[:] = 7
    array.flush()
    del array
    index = pd.DataFrame({"row": np.arange(rows), "height": size, "width": size})
    images = ImageCache(tmp_path / "a.npy", index.assign(path="p", md5="m"))
    before = mapped_file_kib()
    order = np.random.default_rng(0).permutation(rows)  # as a training epoch reads
    assert all(images[i][0, 0, 0] == 7 for i in order)
    assert mapped_file_kib() - before < 8 * 1024  # without dropping the pages: 30 MiB


# ----------------------------------------------------------------------------------------------
# Training on and off the cache


def test_training_reads_the_cache_and_decodes_nothing(cached, monkeypatch):
    def no_decoding(*args, **kwargs):
        raise AssertionError("an image was decoded")

    # LeafDataset decodes files through load_network_image.
    monkeypatch.setattr("pipeline.data.loaders.load_network_image", no_decoding)
    summary = train.main(["--model", "d2l_resnet11", "--fold", "0"])
    assert 0.0 <= summary["oof_acc"] <= 1.0
    assert (Path("models/d2l_resnet11/fold0/test_logits.npy")).is_file()


def test_cache_off_writes_a_manifest_and_training_decodes_the_files(prepared):
    prepared["cache"] = {"enabled": False, "image_size": None}
    write_params(prepared)
    manifest = cache.main([])
    crop_to_leaf = resolve_crop_to_leaf(load_params())
    assert manifest == {
        "enabled": False,
        "image_size": None,
        "images": 0,
        "crop_to_leaf": crop_to_leaf,
    }
    assert sorted(p.name for p in CACHE_DIR.iterdir()) == [
        CACHE_MANIFEST.name,
        CACHE_ORIENTATION.name,
    ]
    assert read_orientation(CACHE_ORIENTATION)["images"] == len(load_table(FOLDS_FILE))
    params = load_params()
    hp = params.train.for_model("d2l_resnet11")
    folds, test = load_table(FOLDS_FILE), load_table(PREPARED_TEST)
    data = data_settings(params, torch.device("cpu"))
    assert data.cache is None and data.cache_size is None
    loaders = build_loaders(hp, fold_tables(folds, test, 0), data)
    assert all(loader.dataset.cache is None for loader in loaders.values())
    summary = train.main(["--model", "d2l_resnet11", "--fold", "0"])
    assert 0.0 <= summary["oof_acc"] <= 1.0


def test_the_orientation_is_measured_on_the_training_images(cached):
    """The embedded leaves lie at any angle; the measure reads the cache's training rows."""
    orientation = read_orientation(CACHE_ORIENTATION)
    assert orientation["images"] == len(load_table(FOLDS_FILE))
    assert orientation["upright"] is False


def test_training_follows_the_measured_orientation(cached, capsys):
    """Stage train leaves out the turning transforms when the measure says upright, and the
    checkpoint records what it trained with, for `leaf predict` and a resume."""
    params = copy.deepcopy(cached)
    params["train"]["defaults"]["augment"]["train"] += [{"name": "RandomRotate90", "p": 0.5}]
    params["train"]["defaults"]["tta"] = {"views": ["identity", "rot180"]}
    write_params(params)
    upright = {**read_orientation(CACHE_ORIENTATION), "upright": True}
    CACHE_ORIENTATION.write_text(json.dumps(upright))
    train.main(["--model", "d2l_resnet11", "--fold", "0"])
    assert "left out: RandomRotate90, TTA rot180" in capsys.readouterr().out
    saved = torch.load("models/d2l_resnet11/fold0/best.pt", weights_only=False)["model_params"]
    assert saved["augment"]["upright"] is True
    assert [spec["name"] for spec in saved["augment"]["train"]] == ["HorizontalFlip"]
    assert saved["tta"]["views"] == ["identity"]


def test_the_cache_size_is_read_from_its_manifest(cached):
    """What the loaders and the resume fingerprint use is the size the cache was built at."""
    assert read_cache_manifest()["image_size"] == 32
    assert built_cache(32).size == 32
    assert built_cache(32).select(load_table(PREPARED_TEST)).size == 32
    assert data_settings(load_params(), torch.device("cpu")).cache_size == 32


def test_a_cache_built_with_other_settings_is_an_error(cached):
    with pytest.raises(PipelineError, match=r"holds 32 px images but the params ask for 48 px"):
        built_cache(48)
    built = json.loads(CACHE_MANIFEST.read_text())["crop_to_leaf"]
    held = "images cut to the leaf" if built else "whole images"
    with pytest.raises(PipelineError, match=f"holds {held} but the params ask for crop_to_leaf"):
        load_image_cache(32, crop_to_leaf=not built)
    test = load_table(PREPARED_TEST)
    changed = test.assign(md5=test.md5.where(test.index != 2, "0" * 32))
    with pytest.raises(PipelineError, match=f"first: {changed.path[2]}.*dvc repro cache"):
        built_cache(32).select(changed)
    CACHE_MANIFEST.unlink()
    with pytest.raises(PipelineError, match="manifest.json not found.*cache.enabled: false"):
        built_cache(32)


# ----------------------------------------------------------------------------------------------
# Compiling


def test_compiled_model_never_recompiles_across_batches():
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    model = D2LResNet((1, 1), num_classes=3, width=8)
    eager = copy.deepcopy(model)
    device.compile_model(model, eval_batch_size=8, backend="eager")  # Dynamo without Inductor
    assert model.state_dict().keys() == eager.state_dict().keys()
    for _epoch in range(2):
        model.train()
        for _ in range(3):  # the train loader drops its last partial batch
            model(torch.randn(4, 3, 16, 16)).sum().backward()
        model.eval()
        with torch.no_grad():
            for batch in (8, 8, 3):  # the last eval batch is smaller
                model(torch.randn(batch, 3, 16, 16))
    assert counters["stats"]["unique_graphs"] == 2  # one per mode, whatever the batch size
    eager.load_state_dict(model.state_dict())
    eager.eval()
    images = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        assert torch.allclose(model(images), eager(images), atol=1e-5)
