"""torchrun and BatchNorm: synced on CUDA without losing timm's activations; on CPU, each
epoch ends with rank 0's statistics in every process (gloo here)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers.processes import run_python

from pipeline.training import distributed


def test_synced_batchnorm_keeps_timm_batchnorm_activations(monkeypatch):
    # timm's BatchNormAct2d (EfficientNet, RegNet) applies its activation itself; a converter
    # that makes it a plain SyncBatchNorm drops it. In eval mode SyncBatchNorm needs no CUDA.
    from timm.layers import BatchNormAct2d

    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: True)
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3),
        BatchNormAct2d(8),
        torch.nn.Conv2d(8, 4, 3),
        torch.nn.BatchNorm2d(4),
    ).eval()
    images = torch.randn(2, 3, 12, 12)
    expected = model(images)
    synced = distributed.sync_batchnorm(model, torch.device("cuda", 0)).eval()
    norms = [type(m).__name__ for m in synced.modules() if "Norm" in type(m).__name__]
    assert norms == ["SyncBatchNormAct", "SyncBatchNorm"]
    torch.testing.assert_close(synced(images), expected)


# Each of two processes trains a BatchNorm model and its EMA on its own data, then shares
# rank 0's buffers (or not); prints whether the running statistics agree across the processes.
SHARE_BUFFERS = """
import sys
import torch
from timm.utils import ModelEmaV3
from pipeline.training import distributed

device = distributed.setup(torch.device("cpu"))
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
ema = ModelEmaV3(model, decay=0.9)
model = torch.nn.parallel.DistributedDataParallel(model)
for step in range(3):
    model(torch.randn(4, 3, 8, 8) + distributed.rank())
    ema.update(model.module)
if sys.argv[1] == "share":
    distributed.share_buffers(device, model.module, ema.module)
means = [model.module[1].running_mean, ema.module[1].running_mean]
parts = distributed.gather([mean.clone() for mean in means])
if distributed.is_main():
    print("equal" if all(map(torch.equal, parts[0], parts[1])) else "different")
"""


@pytest.mark.parametrize("share", ["share", "keep"])
def test_each_process_ends_an_epoch_with_rank_0s_batchnorm_statistics(tmp_path, share):
    (tmp_path / "share_buffers.py").write_text(SHARE_BUFFERS)
    torchrun = ["-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone"]
    run = run_python(
        [*torchrun, "share_buffers.py", share], tmp_path, timeout=120, OMP_NUM_THREADS="1"
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.split()[-1] == ("equal" if share == "share" else "different")


def test_an_epoch_shares_the_weights_buffers_and_their_averages(monkeypatch):
    from types import SimpleNamespace

    from pipeline.training import engine

    shared = []
    monkeypatch.setattr(engine, "train_one_epoch", lambda *args: {"loss": 1.0, "acc": 0.5})
    monkeypatch.setattr(engine, "validate", lambda *args: {})
    monkeypatch.setattr(
        engine.distributed, "share_buffers", lambda device, *modules: shared.append(modules)
    )
    model, averaged = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    trainer = SimpleNamespace(
        device=torch.device("cpu"),
        model=model,
        ema=SimpleNamespace(module=averaged),
        optimizer=SimpleNamespace(param_groups=[{"lr": 0.1}]),
    )
    engine.run_epoch(trainer, {"train": None, "valid": None}, np.zeros(0), 1, 1)
    assert shared == [(model, averaged)]
