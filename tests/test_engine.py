"""pipeline.training.engine: the training loop (metrics stay on the device, a non-finite loss
names its exact step), the optimiser step (EMA, gradient clipping, the scaler) and the
Trainer's resumable state."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from helpers.datasets import Points
from torch import nn

from pipeline.config.model_settings import ModelParams
from pipeline.data.loaders import create_loader
from pipeline.training import engine
from pipeline.training.engine import backward, create_trainer, optimizer_step, train_one_epoch
from pipeline.training.running_metrics import DivergedError

CPU = torch.device("cpu")


class NanAt(nn.Module):
    """A linear net whose output is NaN at training call `bad` (counted from 1)."""

    def __init__(self, bad: int):
        super().__init__()
        self.linear, self.calls, self.bad = nn.Linear(4, 3), 0, bad

    def forward(self, x):
        self.calls += self.training
        out = self.linear(x)
        return out * float("nan") if self.calls == self.bad else out


@pytest.mark.parametrize("sync_every", [1, 4])
@pytest.mark.parametrize(("epoch", "step"), [(2, 3), (1, 5), (2, 4)])
def test_a_nan_names_its_epoch_and_exact_step(monkeypatch, sync_every, epoch, step):
    monkeypatch.setattr(engine, "SYNC_EVERY", {"cpu": sync_every})
    steps = 5
    model = NanAt(bad=(epoch - 1) * steps + step)
    trainer = create_trainer(model, ModelParams(amp=False), steps, CPU)
    loader = create_loader(Points(steps * 2), 2, train=True, seed=0)
    with pytest.raises(DivergedError) as err:
        for e in range(1, 3):
            train_one_epoch(trainer, loader, e, "test")
    assert (err.value.epoch, err.value.step, err.value.steps) == (epoch, step, steps)
    assert str(err.value.loss) == "nan"


def test_deferred_reads_report_the_same_metrics(monkeypatch):
    results = []
    for sync_every in (1, 3):
        monkeypatch.setattr(engine, "SYNC_EVERY", {"cpu": sync_every})
        torch.manual_seed(0)
        trainer = create_trainer(NanAt(bad=0), ModelParams(amp=False), 5, CPU)
        loader = create_loader(Points(10), 2, train=True, seed=0)
        results.append([train_one_epoch(trainer, loader, e, "test") for e in (1, 2)])
    assert results[0] == results[1]


# ----------------------------------------------------------------------------------------------
# The loop as it was at 716a39c (frozen): the new one must train the same weights, to the bit.


def reference_train_one_epoch(trainer, loader, epoch, desc):
    import math

    model = trainer.ddp if trainer.ddp is not None else trainer.model
    device = trainer.device
    model.train()
    loader.sampler.set_epoch(epoch)
    total_loss, correct, seen = 0.0, 0, 0
    for step, (images, targets) in enumerate(loader, start=1):
        images = images.to(device, non_blocking=True)
        targets = loss_targets = targets.to(device, non_blocking=True)
        if trainer.mixup is not None:
            images, loss_targets = engine.mix_batch(trainer.mixup, images, targets)
            targets = loss_targets.argmax(1)
        with trainer.autocast():
            logits = model(images)
            loss = trainer.train_loss_fn(logits, loss_targets)
        trainer.optimizer.zero_grad(set_to_none=True)
        engine.backward(trainer, loss)
        engine.optimizer_step(trainer)
        loss_value = loss.item()
        if not math.isfinite(loss_value):
            raise DivergedError(epoch, step, len(loader), loss_value)
        total_loss += loss_value * len(targets)
        correct += (logits.argmax(1) == targets).sum().item()
        seen += len(targets)
    return {"loss": total_loss / seen, "acc": correct / seen}


@pytest.fixture
def one_thread():
    """One torch thread for a tiny model, restored after: a thread count left behind changes the
    float rounding of later runs (test_determinism compares one with the session's first)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_the_loop_trains_what_the_old_loop_trained(run_copy, monkeypatch, one_thread):
    from helpers.training_runs import cell_outputs, metric_history, write_params

    from pipeline.stages import train

    recipe = {
        "deterministic": True,
        "epochs": 2,
        "batch_size": 2,
        "drop_rate": 0.2,
        "mixup": {"mixup_alpha": 0.4, "cutmix_alpha": 1.0},
        "ema": {"enabled": True},
    }
    write_params(run_copy, run_copy, **recipe)
    results = []
    for loop, sync_every in (
        (reference_train_one_epoch, 1),
        (train_one_epoch, 1),
        (train_one_epoch, 3),
    ):
        with monkeypatch.context() as patch:
            patch.setattr(engine, "train_one_epoch", loop)
            patch.setattr(engine, "SYNC_EVERY", {"cpu": sync_every})
            train.main(["--model", "d2l_resnet11", "--fold", "0"])
        results.append((cell_outputs(run_copy), metric_history(run_copy)))
    torch.use_deterministic_algorithms(False)
    (expected, expected_history), *others = results
    for outputs, history in others:
        for name, tensor in expected["state_dict"].items():
            assert torch.equal(outputs["state_dict"][name], tensor), name
        for name in ("oof_rows", "oof_logits", "test_logits"):
            assert np.array_equal(outputs[name], expected[name]), name
        assert history == expected_history


def test_on_cuda_a_look_shows_the_previous_copy_once_it_has_arrived(monkeypatch):
    """The CUDA branch of HostCopy, with a fake event: never waits, never shows a copy that has
    not arrived, and starts no copy while one is on its way."""
    from pipeline.training import running_metrics

    arrived = {"now": False}

    class FakeEvent:
        def record(self):
            pass

        def query(self):
            return arrived["now"]

    monkeypatch.setattr(running_metrics.torch.cuda, "Event", FakeEvent)
    metrics, copy = running_metrics.RunningMetrics(CPU), running_metrics.HostCopy(CPU)
    copy.cuda = True
    loss, logits, targets = torch.tensor(2.0), torch.eye(3), torch.arange(3)
    metrics.add(1, loss, logits, targets)
    assert copy.exchange(metrics) is None  # nothing copied before
    metrics.add(2, loss, logits, targets)
    assert copy.exchange(metrics) is None  # the first copy is still on its way
    arrived["now"] = True
    values, seen = copy.exchange(metrics)
    assert seen == 3 and values[:2] == (6.0, 3)  # the first copy: one step of three images
    values, seen = copy.exchange(metrics)
    assert seen == 6 and values[:2] == (12.0, 6)


def test_on_apple_mps_the_running_sums_stay_in_float32(monkeypatch):
    """MPS has no float64: every running value is kept in float32 there. Run on CPU with MPS's
    sum dtype, as no MPS device is at hand."""
    from pipeline.training import running_metrics

    assert running_metrics.sum_dtype(torch.device("mps")) == torch.float32
    assert running_metrics.sum_dtype(CPU) == torch.float64
    monkeypatch.setattr(running_metrics, "sum_dtype", lambda device: torch.float32)
    metrics = running_metrics.RunningMetrics(CPU)
    metrics.add(1, torch.tensor(2.0), torch.eye(3), torch.arange(3))
    metrics.add(2, torch.tensor(float("nan")), torch.eye(3), torch.tensor([0, 0, 0]))
    assert metrics.values().dtype == torch.float32
    loss_sum, correct, bad_step, _ = metrics.read()
    assert (correct, bad_step) == (4, 2) and loss_sum != loss_sum  # NaN from step 2


# ----------------------------------------------------------------------------------------------
# EMA, gradient clipping


def small_net() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))


def train_steps(trainer, steps: int) -> None:
    for _ in range(steps):
        loss = 100 * trainer.model(torch.randn(6, 4)).logsumexp(1).mean()  # large gradients
        trainer.optimizer.zero_grad(set_to_none=True)
        backward(trainer, loss)
        optimizer_step(trainer)


def test_ema_moves_towards_the_weights_by_one_minus_decay_each_step():
    torch.manual_seed(0)
    hp = ModelParams(amp=False, ema={"enabled": True, "decay": 0.9, "warmup": False})
    trainer = create_trainer(small_net(), hp, 10, CPU)
    train_steps(trainer, 1)  # timm's first update copies the weights
    before = {k: v.clone() for k, v in trainer.ema.module.state_dict().items()}
    train_steps(trainer, 1)
    weights = trainer.model.state_dict()
    for name, ema in trainer.ema.module.state_dict().items():
        if ema.is_floating_point():  # weights and BatchNorm running statistics
            torch.testing.assert_close(ema, 0.9 * before[name] + 0.1 * weights[name])
    assert not torch.equal(trainer.ema.module[0].weight, trainer.model[0].weight)


def test_ema_is_part_of_the_resumable_state():
    hp = ModelParams(amp=False, ema={"enabled": True, "decay": 0.5})
    trainer = create_trainer(small_net(), hp, 10, CPU)
    train_steps(trainer, 3)
    fresh = create_trainer(small_net(), hp, 10, CPU)
    fresh.load_state_dict(trainer.state_dict())
    for name, value in trainer.ema.state_dict().items():
        assert torch.equal(fresh.ema.state_dict()[name], value), name


def grad_norm(model: nn.Module) -> float:
    return torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()])).item()


@pytest.mark.parametrize("scaled", [False, True])
def test_grad_clipping_bounds_the_gradient_norm(scaled):
    torch.manual_seed(0)
    trainer = create_trainer(small_net(), ModelParams(amp=False), 10, CPU)
    train_steps(trainer, 1)
    assert grad_norm(trainer.model) > 5

    clipped = create_trainer(small_net(), ModelParams(amp=False, grad_clip_norm=0.5), 10, CPU)
    if scaled:  # what fp16 training does: clipping must see the unscaled gradients
        scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
        clipped = dataclasses.replace(clipped, scaler=scaler)
    train_steps(clipped, 1)
    assert grad_norm(clipped.model) == pytest.approx(0.5, rel=1e-4)


# ----------------------------------------------------------------------------------------------
# The scaler, and batches the loaders have already put on the device


def test_the_scaler_is_a_disabled_grad_scaler_off_fp16_and_resumes_either_way():
    torch.manual_seed(0)
    trainer = create_trainer(small_net(), ModelParams(amp=False), 10, CPU)
    assert isinstance(trainer.scaler, torch.amp.GradScaler) and not trainer.scaler.is_enabled()
    trainer.load_state_dict({**trainer.state_dict(), "scaler": None})  # as last.pt stored it
    scaled = dataclasses.replace(trainer, scaler=torch.amp.GradScaler("cpu", init_scale=2.0**10))
    train_steps(scaled, 2)
    fresh = create_trainer(small_net(), ModelParams(amp=False), 10, CPU)
    fresh = dataclasses.replace(fresh, scaler=torch.amp.GradScaler("cpu"))
    fresh.load_state_dict(scaled.state_dict())
    assert fresh.scaler.state_dict() == scaled.scaler.state_dict()


def test_the_step_does_not_move_what_the_loader_moved(monkeypatch):
    """DeviceLoader and DeviceBatches yield batches on the device: the step takes them as they
    are, instead of asking for another copy."""
    moved, real_to = [], torch.Tensor.to

    def to(tensor, *args, **kwargs):
        moved.append(args)
        return real_to(tensor, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "to", to)
    trainer = create_trainer(nn.Linear(4, 3), ModelParams(amp=False), 5, CPU)
    train_one_epoch(trainer, create_loader(Points(10), 2, train=True, seed=0), 1, "test")
    assert not [args for args in moved if CPU in args]
