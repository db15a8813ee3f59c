import os

import numpy as np
import pytest
import torch
from helpers.processes import REPO_ROOT, run_python
from helpers.run_if import RunIf
from helpers.schedules import lrs
from torch import nn

from pipeline.config.model_settings import OptimizerParams, SchedulerParams
from pipeline.io.console import PipelineError
from pipeline.training.device import (
    amp_context,
    amp_dtype,
    configure_determinism,
    resolve_device,
    resolve_num_workers,
)
from pipeline.training.optim import create_optimizer

CPU = torch.device("cpu")


def test_warmup_rises_then_cosine_decays_to_the_floor():
    seen = lrs(SchedulerParams(name="cosine", warmup_epochs=2, min_lr_ratio=0.01))
    warmup = seen[:8]
    assert all(a < b for a, b in zip(warmup, warmup[1:], strict=False))
    decay = seen[8:]
    assert all(a >= b for a, b in zip(decay, decay[1:], strict=False))
    assert max(seen) == pytest.approx(1.0, abs=0.02)
    assert seen[-1] == pytest.approx(0.01, abs=0.01)


def test_constant_schedule_after_warmup():
    seen = lrs(SchedulerParams(name="constant", warmup_epochs=0))
    assert seen == [1.0] * len(seen)


def test_weight_decay_skips_biases_and_norms():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    optimizer = create_optimizer(model, OptimizerParams(name="adamw", weight_decay=0.1))
    decayed, plain = optimizer.param_groups
    assert decayed["weight_decay"] == 0.1 and plain["weight_decay"] == 0.0
    assert [p.ndim for p in decayed["params"]] == [4]
    assert isinstance(create_optimizer(model, OptimizerParams(name="sgd")), torch.optim.SGD)


def test_cpu_runs_in_fp32_without_a_scaler():
    autocast, scaler = amp_context(torch.device("cpu"), enabled=True)
    with autocast():
        out = nn.Linear(2, 2)(torch.ones(1, 2))
    assert out.dtype == torch.float32 and not scaler.is_enabled()


@pytest.mark.parametrize(
    ("gpu", "native_bf16", "expected"),
    [("H100", True, torch.bfloat16), ("T4", False, torch.float16)],
)
def test_cuda_autocasts_in_bf16_only_where_the_gpu_computes_in_it(
    monkeypatch, gpu, native_bf16, expected
):
    # Before Ampere (Kaggle's T4 and P100) torch can make bf16 tensors but only emulates the math.
    def is_bf16_supported(including_emulation=True):
        return including_emulation or native_bf16

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", is_bf16_supported)
    assert amp_dtype(torch.device("cuda"), enabled=True) == expected, gpu
    assert amp_dtype(torch.device("cuda"), enabled=False) is None


def test_a_numbered_gpu_becomes_the_current_one(monkeypatch):
    # Else CUDA events, streams and pinned memory would go to GPU 0, perhaps another job's.
    current = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", current.append)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    assert current == [torch.device("cuda", 1)]
    with pytest.raises(PipelineError, match="'cuda:2' but this machine has 2 CUDA device"):
        resolve_device("cuda:2")
    resolve_device("cuda")
    assert len(current) == 1


def test_auto_workers_suit_the_machine():
    cuda = torch.device("cuda")
    assert resolve_num_workers("auto", CPU, cores=2)[0] == 0
    assert resolve_num_workers("auto", CPU, cores=16)[0] == 4
    assert resolve_num_workers("auto", cuda, cores=64)[0] == 16
    assert resolve_num_workers("auto", cuda, cores=8)[0] == 8
    assert resolve_num_workers(3, CPU) == (3, "train.loader.num_workers")


def test_missing_cuda_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(PipelineError, match="CUDA is not available"):
        resolve_device("cuda")
    assert resolve_device("cpu") == torch.device("cpu")


def test_seeded_runs_repeat():
    from pipeline.training.device import seed_everything

    seed_everything(3)
    first = (torch.rand(3), np.random.rand(3))
    seed_everything(3)
    again = (torch.rand(3), np.random.rand(3))
    assert torch.equal(first[0], again[0]) and np.array_equal(first[1], again[1])


@pytest.fixture
def restore_torch_flags():
    flags = torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark
    cudnn_deterministic = torch.backends.cudnn.deterministic
    yield
    torch.use_deterministic_algorithms(flags[0])
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = (
        flags[1],
        cudnn_deterministic,
    )


def test_deterministic_switches_kernels_and_cudnn_benchmarking(restore_torch_flags, monkeypatch):
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", "")  # so that teardown restores it
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG")
    configure_determinism(True, torch.device("cpu"))
    assert torch.are_deterministic_algorithms_enabled()
    assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
    assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ  # only CUDA needs it
    configure_determinism(True, torch.device("cuda"))  # sets flags only: no CUDA needed
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    configure_determinism(False, torch.device("cpu"))
    assert not torch.are_deterministic_algorithms_enabled()
    assert torch.backends.cudnn.benchmark and not torch.backends.cudnn.deterministic


def test_leaving_determinism_off_does_not_import_inductor():
    # torch.use_deterministic_algorithms imports torch._inductor, a second of every cell's start
    code = (
        "import sys, torch\n"
        "from pipeline.training.device import configure_determinism\n"
        "configure_determinism(False, torch.device('cpu'))\n"
        "assert not torch.are_deterministic_algorithms_enabled()\n"
        "print('torch._inductor' in sys.modules)\n"
    )
    result = run_python(["-c", code], REPO_ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


@pytest.mark.gpu
@RunIf(min_gpus=1)
def test_cuda_mixed_precision_trains_a_step():
    device = torch.device("cuda")
    autocast, scaler = amp_context(device, enabled=True)
    model = nn.Linear(8, 3).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with autocast():
        out = model(torch.randn(4, 8, device=device))
    native = torch.cuda.is_bf16_supported(including_emulation=False)
    expected = torch.bfloat16 if native else torch.float16
    assert out.dtype == expected
    assert scaler.is_enabled() == (expected == torch.float16)
    loss = out.float().logsumexp(1).mean()
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
