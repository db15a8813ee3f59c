"""torchrun: several processes train one cell as a single process would (gloo on CPU here)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from helpers.processes import child_env

from pipeline.config.params import ParamsError, parse_params
from pipeline.config.paths import fold_dir, fold_results_dir, last_checkpoint_path
from pipeline.data.loaders import create_loader
from pipeline.data.samplers import shard_range
from pipeline.io.console import PipelineError
from pipeline.stages import cache, generate, prepare, split
from pipeline.training import distributed

# No BatchNorm: torch's SyncBatchNorm is CUDA-only, so on CPU each process would normalise with
# its own half of the batch (see distributed.sync_batchnorm).
MODEL, FOLD = "test_convnext", 0
TRAIN_ARGS = ["--model", MODEL, "--fold", str(FOLD)]
# Wraps train's atomic writes to log which rank made each, then runs the stage as -m would.
RECORD_WRITES = """
import os
from pipeline.ensemble import cells
from pipeline.training import checkpoint
from pipeline.io import files
from pipeline.training import live
from pipeline.io.console import run
from pipeline.stages import train

def recorded(path, atomic_path=files.atomic_path):
    with open(f"writes.rank{os.environ['RANK']}.txt", "a") as log:
        print(path, file=log)
    return atomic_path(path)

cells.atomic_path = files.atomic_path = live.atomic_path = recorded  # checkpoint writes by files
run(train.main)
"""


class Items:
    """A dataset whose item is its index (EpochSampler's `(index, epoch)` too)."""

    def __init__(self, size: int):
        self.size = size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, item: int | tuple[int, int]) -> int:
        return item[0] if isinstance(item, tuple) else item


@pytest.mark.parametrize("world_size", [2, 4])
def test_the_ranks_share_out_the_single_process_batches(world_size):
    single = create_loader(Items(27), 8, train=True, seed=3)
    shared = [
        create_loader(Items(27), 8, train=True, seed=3, rank=rank, world_size=world_size)
        for rank in range(world_size)
    ]
    for epoch in (1, 2):
        for loader in (single, *shared):
            loader.sampler.set_epoch(epoch)
        expected = [batch.tolist() for batch in single]
        per_rank = [[batch.tolist() for batch in loader] for loader in shared]
        assert all(len(batches) == len(expected) == 3 for batches in per_rank)
        joined = [sum(parts, []) for parts in zip(*per_rank, strict=True)]
        assert joined == expected, epoch
        assert len(shared[0].sampler) == 3 * 8 // world_size


def test_evaluation_shards_are_contiguous_and_cover_the_dataset():
    for size in (0, 1, 7, 9):
        shards = [shard_range(size, rank, 4) for rank in range(4)]
        assert [i for shard in shards for i in shard] == list(range(size))
        assert max(map(len, shards)) - min(map(len, shards)) <= 1
    loaders = [
        create_loader(Items(9), 4, train=False, seed=0, rank=r, world_size=2) for r in (0, 1)
    ]
    assert [[b.tolist() for b in loader] for loader in loaders] == [
        [[0, 1], [2, 3]],
        [[4, 5], [6, 7], [8]],
    ]


def test_a_batch_that_does_not_split_names_the_key_and_the_world_size():
    key = f"train.models.{MODEL}"
    with pytest.raises(PipelineError, match=rf"{key}\.batch_size = 6 .* 4 processes"):
        distributed.check_batch_size(6, 100, key, processes=4)
    with pytest.raises(PipelineError, match="more than the 5 training images"):
        distributed.check_batch_size(8, 5, key, processes=2)
    distributed.check_batch_size(8, 5, key, processes=1)  # one process keeps a partial batch
    distributed.check_batch_size(8, 8, key, processes=4)


def test_mixing_needs_an_even_share_of_the_batch_on_each_process():
    key = f"train.models.{MODEL}"
    with pytest.raises(PipelineError, match=r"each of the 4 processes 3 images .* multiple of 8"):
        distributed.check_batch_size(12, 100, key, processes=4, mixing=True)
    distributed.check_batch_size(12, 100, key, processes=4)  # no mixing: any share
    distributed.check_batch_size(16, 100, key, processes=4, mixing=True)
    distributed.check_batch_size(12, 100, key, processes=1, mixing=True)


def test_devices_torchrun_cannot_share_are_clear_errors(monkeypatch):
    with pytest.raises(PipelineError, match="pins one GPU"):
        distributed.process_device(torch.device("cuda:1"), 0)
    with pytest.raises(PipelineError, match="torchrun cannot share"):
        distributed.process_device(torch.device("mps"), 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(PipelineError, match="LOCAL_RANK=2, but this machine has 2 visible"):
        distributed.process_device(torch.device("cuda"), 2)
    assert distributed.process_device(torch.device("cpu"), 3) == torch.device("cpu")


def test_without_torchrun_everything_is_one_process(monkeypatch):
    for name in distributed.TORCHRUN_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    assert distributed.setup(torch.device("cpu")) == torch.device("cpu")
    assert not torch.distributed.is_initialized()
    assert (distributed.rank(), distributed.world_size(), distributed.is_main()) == (0, 1, True)
    rows = np.arange(6.0).reshape(3, 2)
    assert distributed.gather_rows(rows) is rows
    assert distributed.sum_across((1.5, 2)) == (1.5, 2)
    assert distributed.broadcast(rows) is rows
    assert distributed.sync_batchnorm(model, torch.device("cpu")) is model
    assert distributed.wrap(model, torch.device("cpu")) is None


def test_the_train_stage_launcher_cannot_be_empty():
    with pytest.raises(ParamsError, match="train.launcher = ''"):
        parse_params({"train": {"models": {MODEL: {}}, "launcher": ""}})
    assert parse_params({"train": {"models": {MODEL: {}}}}).train.launcher == "python3"


def prepare_project(workdir: Path, params: dict) -> None:
    """generate, prepare, split and cache in `workdir`, as dvc repro would before train."""
    workdir.mkdir()
    (workdir / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    previous = Path.cwd()
    os.chdir(workdir)
    try:
        for stage in (generate, prepare, split, cache):
            stage.main([])
    finally:
        os.chdir(previous)


def start(command: list[str], workdir: Path) -> subprocess.Popen:
    # One thread each: three processes share the two cores.
    env = child_env(OMP_NUM_THREADS="1", LEAF_QUIET="1")
    return subprocess.Popen(
        command, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def finish(process: subprocess.Popen) -> str:
    out, _ = process.communicate(timeout=240)
    assert process.returncode == 0, out[-4000:]
    return out


def cell_outputs(workdir: Path) -> dict:
    cell = workdir / fold_dir(MODEL, FOLD)
    best = torch.load(cell / "best.pt", map_location="cpu", weights_only=False)
    oof = np.load(cell / "oof.npz")
    summary = json.loads((workdir / fold_results_dir(MODEL, FOLD) / "metrics.json").read_text())
    return {
        "best": best,
        "oof_rows": oof["row"],
        "oof_logits": oof["logits"],
        "test_logits": np.load(cell / "test_logits.npy"),
        "summary": summary,
    }


def flat(metrics: dict, prefix: str = "") -> dict:
    """DVCLive's nested summary (`{"train": {"loss": ...}}`) as `{"train/loss": ...}`."""
    items = {}
    for key, value in metrics.items():
        if isinstance(value, dict):
            items.update(flat(value, f"{prefix}{key}/"))
        else:
            items[f"{prefix}{key}"] = value
    return items


@pytest.mark.slow
@pytest.mark.parametrize("grad_accum_steps", [1, 2])
def test_two_processes_train_a_fold_as_one_does(tmp_path, tiny_params, grad_accum_steps):
    # 9 training images, batches of 4: two batches an epoch, each process taking 2 images of
    # each; with grad_accum_steps 2 they add up to one step, the first without DDP's all-reduce.
    # 9 validation images shard 5 + 4. With EMA (same on every rank), without mixing (its pairs
    # are drawn within each process's share) or dropout (masks per process).
    tiny_params["train"]["models"] = {MODEL: {}}
    tiny_params["train"]["deterministic"] = True
    defaults = tiny_params["train"]["defaults"]
    defaults.update(epochs=2, batch_size=4, drop_rate=0.0, grad_accum_steps=grad_accum_steps)
    defaults["ema"] = {"enabled": True, "decay": 0.9, "warmup": False}
    single, shared = tmp_path / "single", tmp_path / "shared"
    prepare_project(single, tiny_params)
    shutil.copytree(single, shared)
    (shared / "record_writes.py").write_text(RECORD_WRITES)

    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone"]
    runs = {
        "single": start([sys.executable, "-m", "pipeline.stages.train", *TRAIN_ARGS], single),
        "shared": start([*torchrun, "record_writes.py", *TRAIN_ARGS], shared),
    }
    logs = {name: finish(process) for name, process in runs.items()}

    # Only rank 0 wrote, and only rank 0 printed.
    assert not (shared / "writes.rank1.txt").exists()
    written = set((shared / "writes.rank0.txt").read_text().split())
    expected = {
        fold_dir(MODEL, FOLD),
        fold_results_dir(MODEL, FOLD),
        last_checkpoint_path(MODEL, FOLD),
    }
    assert written == {str(path) for path in expected}
    assert logs["shared"].count("epoch   2/2") == 1 and logs["single"].count("epoch   2/2") == 1
    last = torch.load(shared / last_checkpoint_path(MODEL, FOLD), weights_only=False)
    assert last["complete"] and last["fingerprint"]["world_size"] == 2

    # The same steps: the same best epoch, weights, predictions and metrics, up to rounding.
    one, two = cell_outputs(single), cell_outputs(shared)
    assert two["best"]["epoch"] == one["best"]["epoch"]
    assert two["best"]["weights"] == one["best"]["weights"]
    for name, tensor in one["best"]["state_dict"].items():
        torch.testing.assert_close(two["best"]["state_dict"][name], tensor, atol=1e-4, rtol=1e-4)
    np.testing.assert_array_equal(two["oof_rows"], one["oof_rows"])
    for name in ("oof_logits", "test_logits"):
        np.testing.assert_allclose(two[name], one[name], atol=1e-4, err_msg=name)
    assert flat(two["summary"]) == pytest.approx(flat(one["summary"]), abs=1e-4)
