"""The training loop: metrics stay on the device, and a non-finite loss names its exact step."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from pipeline.config.model_settings import ModelParams
from pipeline.data.loaders import create_loader
from pipeline.training import engine
from pipeline.training.device import resolve_num_workers
from pipeline.training.engine import create_trainer, train_one_epoch
from pipeline.training.running_metrics import DivergedError

CPU = torch.device("cpu")


class Points(Dataset):
    """Random 4-d points with 3 classes, indexed by (index, epoch) as EpochSampler yields."""

    def __init__(self, size: int):
        generator = torch.Generator().manual_seed(0)
        self.x, self.y = torch.randn(size, 4, generator=generator), torch.arange(size) % 3

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, item):
        index = item[0] if isinstance(item, tuple) else item
        return self.x[index], int(self.y[index])


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


def test_auto_workers_suit_the_machine():
    cuda = torch.device("cuda")
    assert resolve_num_workers("auto", CPU, cores=2)[0] == 0
    assert resolve_num_workers("auto", CPU, cores=16)[0] == 4
    assert resolve_num_workers("auto", cuda, cores=64)[0] == 16
    assert resolve_num_workers("auto", cuda, cores=8)[0] == 8
    assert resolve_num_workers(3, CPU) == (3, "train.loader.num_workers")


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
        engine.optimizer_step(trainer, loss)
        loss_value = loss.item()
        if not math.isfinite(loss_value):
            raise DivergedError(epoch, step, len(loader), loss_value)
        total_loss += loss_value * len(targets)
        correct += (logits.argmax(1) == targets).sum().item()
        seen += len(targets)
    return {"loss": total_loss / seen, "acc": correct / seen}


def test_the_loop_trains_what_the_old_loop_trained(run_copy, monkeypatch):
    from test_resume import cell_outputs, metric_history, write_params

    from pipeline.stages import train

    torch.set_num_threads(1)
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
