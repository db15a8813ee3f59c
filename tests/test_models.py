import pytest
import torch

from pipeline.io.console import PipelineError
from pipeline.models.registry import _REGISTRY, create_model, is_known_model

# One of each family: the project's own, torchvision's, timm's.
NAMES = sorted(_REGISTRY) + ["tv:resnet18", "tv-resnet18", "resnet18", "resnet18.a1_in1k"]


@pytest.mark.parametrize("name", NAMES)
def test_forward_gives_one_logit_per_class(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=7, drop_rate=0.1).eval()
    with torch.no_grad():
        logits = model(torch.randn(2, 3, 64, 64))
    assert logits.shape == (2, 7)
    assert torch.isfinite(logits).all()


def test_d2l_resnet11_is_smaller_than_resnet18():
    def size(name):
        return sum(p.numel() for p in create_model(name, num_classes=10).parameters())

    assert size("d2l_resnet11") < size("d2l_resnet18")


def test_unknown_names_raise_with_suggestions():
    with pytest.raises(PipelineError, match="did you mean.*resnet18"):
        create_model("resnet1800", num_classes=3)
    with pytest.raises(PipelineError, match="unknown model 'tv:resnet1800'"):
        create_model("tv:resnet1800", num_classes=3)


def test_names_are_recognised():
    assert is_known_model("d2l_resnet18")
    assert is_known_model("tv:resnet50") and is_known_model("tv-resnet50")
    assert is_known_model("resnext50_32x4d")
    assert is_known_model("resnet50.a1_in1k")
    assert not is_known_model("tv:not_a_model")


def test_d2l_models_have_no_pretrained_weights():
    with pytest.raises(PipelineError, match="no pretrained weights"):
        create_model("d2l_resnet18", num_classes=3, pretrained=True)


def test_none_kwargs_are_dropped():
    model = create_model("d2l_resnet11", num_classes=3, drop_rate=None)
    assert model.head[2].p == 0.0


def test_pretrained_timm_weights_that_cannot_be_fetched_name_the_model(monkeypatch, tmp_path):
    # An empty cache and no network: the Hugging Face hub fails at once instead of downloading.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    with pytest.raises(PipelineError, match=r"resnet18.*pretrained: false") as err:
        create_model("resnet18", num_classes=3, pretrained=True)
    assert "Hugging Face cache" in str(err.value)


def test_stochastic_depth_reaches_timm_blocks_and_is_refused_where_a_model_has_none():
    from timm.layers import DropPath

    model = create_model("resnet18", num_classes=3, drop_path_rate=0.2)
    rates = [m.drop_prob for m in model.modules() if isinstance(m, DropPath)]
    assert rates and max(rates) == pytest.approx(0.2)  # rising block by block up to it
    plain = create_model("resnet18", num_classes=3, drop_path_rate=None)
    assert not [m for m in plain.modules() if isinstance(m, DropPath)]
    with pytest.raises(PipelineError, match="'densenet121' has no stochastic depth.*: 0"):
        create_model("densenet121", num_classes=3, drop_path_rate=0.1)
