"""The d2l course's nets (pipeline/models/d2l.py, d2l_resnet.py) behind the model registry."""

import pytest
import torch
from torch import nn

from pipeline.config.checks import backbone_problems
from pipeline.config.model_settings import OptimizerParams
from pipeline.config.params import parse_params
from pipeline.io.console import PipelineError
from pipeline.models.registry import _REGISTRY, create_model, head_parameters, is_known_model
from pipeline.training.optim import create_optimizer

CLASSIC = ["d2l_lenet", "d2l_alexnet", "d2l_vgg11", "d2l_vgg11_small", "d2l_nin", "d2l_googlenet"]
RESNETS = ["d2l_resnet11_small", "d2l_resnet18_small", "d2l_resnet11_wide", "d2l_resnet11_slim"]
NEW = CLASSIC + RESNETS
WITH_DROPOUT = ["d2l_alexnet", "d2l_vgg11", "d2l_nin"]  # the chapters' own dropout layers


@pytest.mark.parametrize("num_classes", [7, 176])
@pytest.mark.parametrize("name", NEW)
def test_one_logit_per_class_at_32_and_64_px(name, num_classes):
    torch.manual_seed(0)
    model = create_model(name, num_classes=num_classes, drop_rate=0.0).eval()
    with torch.no_grad():
        for size in (32, 64):
            logits = model(torch.randn(2, 3, size, size))
            assert logits.shape == (2, num_classes)
            assert torch.isfinite(logits).all()


@pytest.mark.parametrize("name", NEW)
def test_one_training_step_changes_the_weights(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=5, drop_rate=0.1).train()
    first = next(model.parameters())
    head = head_parameters(model)[-1]
    before = [first.detach().clone(), head.detach().clone()]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    loss = nn.functional.cross_entropy(model(torch.randn(4, 3, 32, 32)), torch.arange(4))
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)
    assert not torch.equal(first, before[0]) and not torch.equal(head, before[1])


@pytest.mark.parametrize("name", NEW)
def test_the_head_ends_in_one_row_per_class(name):
    model = create_model(name, num_classes=9)
    head = head_parameters(model)
    assert head[-1].shape[0] == 9  # what engine.create_trainer counts the classes by
    assert 0 < len(head) < len(list(model.parameters()))
    optimizer = create_optimizer(model, OptimizerParams(lr=0.01, head_lr=0.1))  # head_lr works
    in_head = sum(len(g["params"]) for g in optimizer.param_groups if g["lr"] == 0.1)
    assert in_head == len(head)


@pytest.mark.parametrize("name", WITH_DROPOUT)
def test_drop_rate_sets_every_dropout(name):
    def rates(model):
        return {m.p for m in model.modules() if isinstance(m, nn.Dropout)}

    assert rates(create_model(name, 3, drop_rate=0.3)) == {0.3}
    assert rates(_REGISTRY[name](3)) == {0.5}  # the course's, when nothing is passed


def test_the_small_stem_keeps_the_full_resolution_into_the_first_stage():
    def first_stage_size(name):
        model = create_model(name, num_classes=3).eval()
        with torch.no_grad():
            return model.stages[0](model.stem(torch.randn(1, 3, 64, 64))).shape[-1]

    assert first_stage_size("d2l_resnet11_small") == 64
    assert first_stage_size("d2l_resnet11") == 16


def test_the_wide_resnet_is_wider():
    assert create_model("d2l_resnet11_wide", 3).head[-1].in_features == 768
    assert create_model("d2l_resnet11_wide", 3, width=32).head[-1].in_features == 256


def test_the_slim_resnet_is_half_as_wide():
    assert create_model("d2l_resnet11_slim", 3).head[-1].in_features == 256


def test_the_narrow_vgg_has_a_quarter_of_the_channels():
    def convs(name):
        return [m.out_channels for m in create_model(name, 3).modules() if isinstance(m, nn.Conv2d)]

    assert convs("d2l_vgg11") == [64, 128, 256, 256, 512, 512, 512, 512]
    assert convs("d2l_vgg11_small") == [c // 4 for c in convs("d2l_vgg11")]


def test_the_names_are_known_and_pass_the_backbone_check():
    assert all(is_known_model(name) for name in NEW)
    models = {name: {} for name in NEW} | {"mine": {"backbone": "d2l_googlenet"}}
    assert backbone_problems(parse_params({"train": {"models": models}})) == []


def test_an_unknown_d2l_name_lists_close_matches():
    with pytest.raises(PipelineError, match=r"did you mean d2l_vgg11\b.*allowed: .*d2l_googlenet"):
        create_model("d2l_vgg", num_classes=3)
    with pytest.raises(PipelineError, match="did you mean d2l_lenet"):
        create_model("d2l_lenett", num_classes=3)
    problems = backbone_problems(parse_params({"train": {"models": {"d2l_alexnett": {}}}}))
    assert len(problems) == 1 and "did you mean d2l_alexnet" in problems[0]


def test_d2l_nets_have_no_pretrained_weights():
    with pytest.raises(PipelineError, match="no pretrained weights"):
        create_model("d2l_googlenet", num_classes=3, pretrained=True)
