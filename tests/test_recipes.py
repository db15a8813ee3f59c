"""Training recipes: MixUp/CutMix, EMA of the weights, head learning rate, gradient clipping,
the onecycle schedule, and their params.yaml schema. A training run with all of them on:
test_recipes_training.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers.params import problems
from helpers.schedules import lrs
from torch import nn

from pipeline.config.model_settings import (
    MixupParams,
    ModelParams,
    OptimizerParams,
    SchedulerParams,
)
from pipeline.config.params import parse_params
from pipeline.models.registry import create_model
from pipeline.training import optim
from pipeline.training.engine import create_mixup, create_trainer, mix_batch
from pipeline.training.fitting import epoch_best, kept_weights
from pipeline.training.optim import create_optimizer

CPU = torch.device("cpu")

# ----------------------------------------------------------------------------------------------
# MixUp and CutMix


def constant_images(values: list[float], size: int = 16) -> torch.Tensor:
    """One 3 x size x size image per value, every pixel that value."""
    return torch.tensor(values).view(-1, 1, 1, 1).expand(-1, 3, size, size).clone()


def mixed(params: MixupParams, images, targets, smoothing=0.0, num_classes=5, seed=0):
    np.random.seed(seed)  # timm's Mixup draws from numpy's global RNG
    mixup = create_mixup(params, smoothing, num_classes)
    return mix_batch(mixup, images.clone(), torch.tensor(targets))


@pytest.mark.parametrize("seed", range(4))
def test_mixup_blends_each_row_with_its_mirror_in_proportion_lam(seed):
    images, targets = constant_images([1.0, 2.0, 3.0, 4.0]), [0, 1, 2, 3]
    out, soft = mixed(MixupParams(mixup_alpha=1.0), images, targets, seed=seed)
    torch.testing.assert_close(soft.sum(1), torch.ones(4))
    lam = soft[0, 0].item()
    assert 0 < lam < 1 and soft[0, 3].item() == pytest.approx(1 - lam, abs=1e-6)
    for row, partner in enumerate([3, 2, 1, 0]):  # batch mode pairs row i with row n-1-i
        expected = torch.zeros(5)
        expected[targets[row]] += lam
        expected[targets[partner]] += 1 - lam
        torch.testing.assert_close(soft[row], expected)
        blended = lam * images[row] + (1 - lam) * images[partner]
        torch.testing.assert_close(out[row], blended)


@pytest.mark.parametrize("seed", range(4))
def test_cutmix_pastes_a_box_whose_area_is_the_partners_share(seed):
    images = constant_images([0.0, 1.0], size=32)
    out, soft = mixed(MixupParams(cutmix_alpha=1.0), images, [0, 1], num_classes=3, seed=seed)
    torch.testing.assert_close(soft.sum(1), torch.ones(2))
    lam = soft[0, 0].item()
    assert soft[0, 2] == 0 and soft[0, 1].item() == pytest.approx(1 - lam)
    pasted = (out[0] == 1.0).float().mean().item()  # row 0's pixels now from row 1
    assert pasted == pytest.approx(1 - lam, abs=1e-6)
    # and the other way round: row 1 holds the same box of row 0
    torch.testing.assert_close(soft[1], soft[0][[1, 0, 2]])
    torch.testing.assert_close(out[1], 1 - out[0])


def test_switch_prob_picks_cutmix_or_mixup_per_batch():
    images = constant_images([0.0, 1.0], size=32)
    kinds = set()
    for seed in range(20):
        params = MixupParams(mixup_alpha=1.0, cutmix_alpha=1.0, switch_prob=0.5)
        out, _ = mixed(params, images, [0, 1], num_classes=2, seed=seed)
        values = out[0].unique()
        kinds.add("cutmix" if set(values.tolist()) <= {0.0, 1.0} else "mixup")
    assert kinds == {"cutmix", "mixup"}


def test_prob_zero_leaves_batches_unmixed_but_smoothed():
    images = constant_images([1.0, 2.0])
    out, soft = mixed(MixupParams(mixup_alpha=1.0, prob=0.0), images, [0, 1], smoothing=0.1)
    torch.testing.assert_close(out, images)
    torch.testing.assert_close(soft[0], torch.tensor([0.92, 0.02, 0.02, 0.02, 0.02]))


def test_label_smoothing_spreads_over_the_mixed_targets():
    images = constant_images([1.0, 2.0, 3.0, 4.0])
    _, soft = mixed(MixupParams(mixup_alpha=1.0), images, [0, 1, 2, 3], smoothing=0.1)
    torch.testing.assert_close(soft.sum(1), torch.ones(4))
    assert soft[:, 4].tolist() == pytest.approx([0.1 / 5] * 4)  # a class in no image


def test_an_odd_batch_mixes_all_but_its_last_row():
    images = constant_images([1.0, 2.0, 3.0])
    out, soft = mixed(MixupParams(mixup_alpha=1.0), images, [0, 1, 2], smoothing=0.1)
    torch.testing.assert_close(soft.sum(1), torch.ones(3))
    torch.testing.assert_close(out[2], images[2])
    torch.testing.assert_close(soft[2], torch.tensor([0.02, 0.02, 0.92, 0.02, 0.02]))
    assert 1.0 < out[0].mean().item() < 2.0  # rows 0 and 1 mixed with each other


def test_mixing_is_off_by_default():
    assert create_mixup(ModelParams().mixup, 0.1, 5) is None
    trainer = create_trainer(nn.Linear(4, 3), ModelParams(amp=False), 4, CPU)
    assert trainer.mixup is None and trainer.train_loss_fn is trainer.loss_fn
    assert trainer.ema is None and trainer.grad_clip_norm is None


@pytest.mark.parametrize(
    ("metrics", "expected"),
    [
        ({"valid/acc": 0.5, "valid/loss": 1.0}, ("raw", 0.5, 1.0)),
        ({"valid/acc": 0.5, "valid/loss": 1.0, "valid_ema/acc": 0.6, "valid_ema/loss": 2.0},
         ("ema", 0.6, 2.0)),
        ({"valid/acc": 0.7, "valid/loss": 1.0, "valid_ema/acc": 0.6, "valid_ema/loss": 0.5},
         ("raw", 0.7, 1.0)),
        ({"valid/acc": 0.6, "valid/loss": 1.0, "valid_ema/acc": 0.6, "valid_ema/loss": 0.9},
         ("ema", 0.6, 0.9)),
        ({"valid/acc": 0.6, "valid/loss": 1.0, "valid_ema/acc": 0.6, "valid_ema/loss": 1.0},
         ("raw", 0.6, 1.0)),
    ],
)  # fmt: skip
def test_the_better_weights_win_on_accuracy_then_loss(metrics, expected):
    assert epoch_best(metrics) == expected


NO_BEST = {"acc": -1.0, "loss": float("inf")}
BEST_SO_FAR = {"acc": 0.8, "loss": 0.5}
RAW = {"valid/acc": 0.5, "valid/loss": 1.0}
RAW_AND_EMA = {**RAW, "valid_ema/acc": 0.4, "valid_ema/loss": 2.0}


@pytest.mark.parametrize(
    ("metrics", "best", "keep", "expected"),
    [
        (RAW, BEST_SO_FAR, "last", ("raw", 0.5, 1.0)),  # worse than the best, kept all the same
        (RAW_AND_EMA, BEST_SO_FAR, "last", ("ema", 0.4, 2.0)),  # the average, though raw is better
        (RAW, BEST_SO_FAR, "best", None),
        (RAW, NO_BEST, "best", ("raw", 0.5, 1.0)),
        (RAW_AND_EMA, NO_BEST, "best", ("raw", 0.5, 1.0)),
    ],
)  # fmt: skip
def test_keep_last_takes_every_epoch_without_looking_at_validation(metrics, best, keep, expected):
    assert kept_weights(metrics, best, keep) == expected


# ----------------------------------------------------------------------------------------------
# Head learning rate


@pytest.mark.parametrize(
    ("name", "head"),
    [
        ("d2l_resnet11", lambda m: m.head[-1]),
        ("tv:resnet18", lambda m: m.fc),
        ("tv:mobilenet_v3_small", lambda m: m.classifier),  # Linear, Hardswish, Dropout, Linear
        ("resnet18", lambda m: m.get_classifier()),  # timm
    ],
)
def test_head_lr_group_holds_exactly_the_classifier(name, head):
    model = create_model(name, num_classes=3)
    params = OptimizerParams(lr=0.001, head_lr=0.1, weight_decay=0.05)
    optimizer = create_optimizer(model, params)
    by_lr = {lr: [p for g in optimizer.param_groups if g["lr"] == lr for p in g["params"]]
             for lr in (0.001, 0.1)}  # fmt: skip
    expected = {id(p) for p in head(model).parameters()}
    assert {id(p) for p in by_lr[0.1]} == expected and len(by_lr[0.1]) == len(expected)
    everything = {id(p) for p in model.parameters()}
    assert {id(p) for p in by_lr[0.001]} == everything - expected
    for group in optimizer.param_groups:  # the head's bias is not decayed either
        assert all(p.ndim > 1 for p in group["params"]) == (group["weight_decay"] > 0)


def test_head_falls_back_to_the_last_linear_layer():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4, 5), nn.Linear(5, 2))
    optimizer = create_optimizer(model, OptimizerParams(lr=0.01, head_lr=0.5))
    head = [p for g in optimizer.param_groups if g["lr"] == 0.5 for p in g["params"]]
    assert {id(p) for p in head} == {id(model[3].weight), id(model[3].bias)}


def test_the_schedule_scales_the_head_lr_alike():
    params = OptimizerParams(lr=0.01, head_lr=0.1)
    optimizer = create_optimizer(create_model("d2l_resnet11", num_classes=3), params)
    scheduler = optim.create_scheduler(optimizer, SchedulerParams(warmup_epochs=1), 20, 10)
    for _ in range(5):
        optimizer.step()
        scheduler.step()
    body, *_, head = optimizer.param_groups
    assert body["lr"] == pytest.approx(0.01 * 6 / 11)  # (step + 1) / (warmup + 1)
    assert head["lr"] == pytest.approx(10 * body["lr"])


# ----------------------------------------------------------------------------------------------
# Schedules: 10 epochs of 4 steps, lr 1.0


def test_onecycle_rises_from_lr_over_div_then_anneals_to_a_tiny_lr():
    params = SchedulerParams(name="onecycle", warmup_epochs=3, div_factor=25, final_div_factor=1e4)
    seen = lrs(params)
    warmup, anneal = seen[:12], seen[12:]
    assert seen[0] == pytest.approx(1 / 25)
    assert all(a < b for a, b in zip(warmup, warmup[1:], strict=False))
    assert max(seen) == anneal[0] == pytest.approx(1.0)
    assert all(a > b for a, b in zip(anneal, anneal[1:], strict=False))
    assert seen[-1] < 0.01 and seen[-1] > 1 / 25 / 1e4
    # the rise is half a cosine: halfway through the warmup, halfway between start and peak
    assert seen[6] == pytest.approx((1 / 25 + 1) / 2)


def test_cosine_starts_low_peaks_at_lr_and_ends_at_its_floor():
    seen = lrs(SchedulerParams(name="cosine", warmup_epochs=1, min_lr_ratio=0.1))
    assert seen[0] == pytest.approx(1 / 5)  # (step + 1) / (warmup + 1)
    assert seen[4] == pytest.approx(1.0)
    assert seen[-1] == pytest.approx(0.1, abs=0.01) and min(seen[4:]) >= 0.1


def test_constant_warms_up_then_holds_lr():
    seen = lrs(SchedulerParams(name="constant", warmup_epochs=1))
    assert seen[:5] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0]) and set(seen[4:]) == {1.0}


# ----------------------------------------------------------------------------------------------
# Schema


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"mixup": {"mixup_alpha": -0.1}}, "train.defaults.mixup.mixup_alpha = -0.1"),
        ({"mixup": {"cutmix_alpha": "big"}}, "train.defaults.mixup.cutmix_alpha = 'big'"),
        ({"mixup": {"prob": 1.5}}, "train.defaults.mixup.prob = 1.5: Input should be less"),
        ({"mixup": {"switch_prob": -1}}, "train.defaults.mixup.switch_prob = -1"),
        ({"mixup": {"alpha": 1}}, "train.defaults.mixup.alpha: unknown key"),
        ({"ema": {"decay": 1.0}}, "train.defaults.ema.decay = 1.0: Input should be less than 1"),
        ({"ema": {"enabled": "sometimes"}}, "train.defaults.ema.enabled = 'sometimes'"),
        ({"optimizer": {"head_lr": 0}}, "train.defaults.optimizer.head_lr = 0"),
        ({"grad_clip_norm": -1.0}, "train.defaults.grad_clip_norm = -1.0"),
        ({"grad_accum_steps": 0}, "train.defaults.grad_accum_steps = 0: Input should be greater"),
        (
            {"scheduler": {"name": "step"}},
            "train.defaults.scheduler.name = 'step': Input should be",
        ),
        ({"scheduler": {"div_factor": 0.5}}, "train.defaults.scheduler.div_factor = 0.5"),
        (
            {"batch_size": 7, "mixup": {"cutmix_alpha": 1.0}},
            "train.defaults.mixup = {'cutmix_alpha': 1.0}: needs an even batch_size, but "
            "batch_size is 7",
        ),
    ],
)
def test_invalid_recipe_settings_name_key_and_value(change, expected):
    raw = {"train": {"models": {"d2l_resnet11": {}}, "defaults": change}}
    assert expected in problems(raw)


def test_an_odd_batch_size_is_fine_without_mixing_and_per_model_overrides_are_checked():
    parse_params({"train": {"models": {"d2l_resnet11": None}, "defaults": {"batch_size": 7}}})
    raw = {"train": {"models": {"d2l_resnet11": {"batch_size": 5, "mixup": {"mixup_alpha": 0.2}}}}}
    assert "train.models.d2l_resnet11.mixup = " in problems(raw)
