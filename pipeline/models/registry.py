"""One registry for every backbone, behind `create_model(name, num_classes, pretrained)`.

`pretrained` is False, True (the timm/torchvision hub) or a local weights path
(pipeline.models.weights).

Names resolve in this order:
- the d2l course's nets, registered here (`d2l_*`: ResNets in pipeline/models/d2l_resnet.py, with
  small-input and wide variants; LeNet, AlexNet, VGG, NiN and GoogLeNet in pipeline/models/d2l.py);
- `tv:<name>` (or `tv-<name>`, which `dvc exp run -S` accepts as a key): a torchvision
  classification model, e.g. `tv:resnet50`;
- anything else: a timm model, e.g. `resnet18`, `resnext50_32x4d`, `efficientnet_b0`.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache, partial
from typing import TYPE_CHECKING

from torch import nn

from pipeline.io.console import PipelineError, did_you_mean
from pipeline.models.d2l import VGG, VGG11_ARCH, VGG11_SMALL_ARCH, AlexNet, GoogLeNet, LeNet, NiN
from pipeline.models.d2l_resnet import D2LResNet
from pipeline.models.weights import find_weights_file, load_weights

if TYPE_CHECKING:
    from pipeline.config.model_settings import ModelParams

# torchvision's models are named `tv:<name>`, or `tv-<name>`: the form `dvc exp run -S` takes
# as a key of train.models (its override grammar has no ":" in keys).
TORCHVISION_PREFIXES = ("tv:", "tv-")


def torchvision_name(name: str) -> str | None:
    """The torchvision model a `tv:<name>` or `tv-<name>` model names, else None."""
    for prefix in TORCHVISION_PREFIXES:
        if name.startswith(prefix):
            return name.removeprefix(prefix)
    return None


# The d2l course's nets (pipeline/models/d2l_resnet.py, pipeline/models/d2l.py): name -> the
# builder of (num_classes, **kwargs). None has pretrained weights.
_REGISTRY: dict[str, Callable[..., nn.Module]] = {
    # The course's ResNet-18: two residual blocks in each of four stages.
    "d2l_resnet18": partial(D2LResNet, (2, 2, 2, 2)),
    # The smaller variant the course uses for Classify Leaves: 2, 1, 1, 1 blocks (11 layers).
    "d2l_resnet11": partial(D2LResNet, (2, 1, 1, 1)),
    # The small-input stem (3x3 stride 1, no max-pool), for 32-96 px images: a 64 px leaf
    # enters the first stage at 64 x 64.
    "d2l_resnet18_small": partial(D2LResNet, (2, 2, 2, 2), small_stem=True),
    "d2l_resnet11_small": partial(D2LResNet, (2, 1, 1, 1), small_stem=True),
    # ResNet-11 at 1.5x width (96 to 768 channels instead of 64 to 512), and at half width
    # (32 to 256): about a third of the compute on a CPU.
    "d2l_resnet11_wide": partial(D2LResNet, (2, 1, 1, 1), width=96),
    "d2l_resnet11_slim": partial(D2LResNet, (2, 1, 1, 1), width=32),
    # LeNet-5: two conv5-sigmoid-avgpool layers, then dense 120 and 84.
    "d2l_lenet": LeNet,
    # AlexNet: five convs, then dense 4096-4096 with dropout.
    "d2l_alexnet": AlexNet,
    # VGG-11: the course's conv_arch ((1, 64), (1, 128), (2, 256), (2, 512), (2, 512)), and with
    # its 4x narrower convs (16 to 128 channels), as the course trains it.
    "d2l_vgg11": partial(VGG, VGG11_ARCH),
    "d2l_vgg11_small": partial(VGG, VGG11_SMALL_ARCH),
    # Network in Network: NiN blocks and a global average pool, no dense layer.
    "d2l_nin": NiN,
    # GoogLeNet: nine Inception blocks in three stages.
    "d2l_googlenet": GoogLeNet,
}


def create_model(
    name: str, num_classes: int, pretrained: bool | str = False, **kwargs
) -> nn.Module:
    """Build a classifier with `num_classes` outputs. `None` kwargs are dropped.

    Args:
        name: a d2l net, `tv:<torchvision model>` or a timm model.
        num_classes: the head's outputs.
        pretrained: False; True for the timm/torchvision hub weights; or a path to a weights
            file, a folder or a Hugging Face cache (pipeline.models.weights), loaded but for
            the head.

    Raises:
        PipelineError: the name is unknown, or pretrained weights cannot be had.
    """
    if not isinstance(pretrained, bool):
        file = find_weights_file(pretrained, name)
        model = create_model(name, num_classes, False, **kwargs)
        print(load_weights(model, file, head_module(model), name))
        return model
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    if name in _REGISTRY:
        if pretrained:
            raise PipelineError(f"{name} has no pretrained weights; set pretrained: false")
        return _REGISTRY[name](num_classes, **kwargs)
    if torchvision_name(name) is not None:
        return _create_torchvision(torchvision_name(name), num_classes, pretrained, **kwargs)
    if not is_known_model(name):
        raise PipelineError(f"unknown model {name!r}; {model_choices_hint(name)}")
    return _create_timm(name, num_classes, pretrained, **kwargs)


def create_cell_model(
    hp: ModelParams, model_name: str, num_classes: int, pretrained: bool | str
) -> nn.Module:
    """A cell's network: its backbone (`hp.backbone`, else the cell's key of train.models), with
    its dropout and stochastic depth (left out at 0, since only timm takes it)."""
    return create_model(
        hp.backbone or model_name,
        num_classes,
        pretrained,
        drop_rate=hp.drop_rate,
        drop_path_rate=hp.drop_path_rate or None,
    )


def head_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters of the classifier head (`head_module`)."""
    return list(head_module(model).parameters())


def head_module(model: nn.Module) -> nn.Module:
    """The classifier head: the layers that map pooled features to logits.

    timm models name theirs (`get_classifier()`); torchvision ones call it `fc`, `classifier`,
    `heads` or `head`, and our d2l nets `head` (all their layers after the conv body, as
    torchvision's `classifier`). Anything else: its last nn.Linear.
    """
    candidates = [model.get_classifier()] if hasattr(model, "get_classifier") else []
    candidates += [getattr(model, name, None) for name in ("fc", "classifier", "heads", "head")]
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    candidates += linears[-1:]
    for module in candidates:
        if isinstance(module, nn.Module) and list(module.parameters()):
            return module
    raise PipelineError(f"{type(model).__name__} has no classifier head (no nn.Linear) to find")


def _create_timm(name: str, num_classes: int, pretrained: bool, **kwargs) -> nn.Module:
    import timm

    try:
        return timm.create_model(name, pretrained=pretrained, num_classes=num_classes, **kwargs)
    except TypeError as err:
        if "drop_path_rate" not in str(err):
            raise
        raise PipelineError(
            f"timm model {name!r} has no stochastic depth ({err}); set its drop_path_rate: 0"
        ) from None
    except (OSError, RuntimeError) as err:
        if not pretrained:
            raise
        raise PipelineError(
            f"could not load pretrained weights for timm model {name!r} ({err}). Download them "
            "once on a machine with internet (timm.create_model(name, pretrained=True) fills "
            "the Hugging Face cache, ~/.cache/huggingface), copy the cache here, or set "
            "pretrained: false"
        ) from None


def _create_torchvision(
    name: str, num_classes: int, pretrained: bool, drop_rate: float = 0.0
) -> nn.Module:
    import torchvision

    if name not in _torchvision_names():
        raise PipelineError(f"unknown model 'tv:{name}'; {model_choices_hint('tv:' + name)}")
    if not pretrained:
        model = torchvision.models.get_model(name, weights=None, num_classes=num_classes)
    else:
        try:
            model = torchvision.models.get_model(name, weights="DEFAULT")
        except (OSError, RuntimeError) as err:
            raise PipelineError(
                f"could not load pretrained weights for tv:{name} ({err}); put them in the torch "
                "hub cache (~/.cache/torch/hub/checkpoints) or set pretrained: false"
            ) from None
        if not isinstance(getattr(model, "fc", None), nn.Linear):
            raise PipelineError(f"tv:{name}: pretrained is supported for models with an `fc` head")
        model.fc = nn.Linear(model.fc.in_features, num_classes)
    if drop_rate and isinstance(getattr(model, "fc", None), nn.Linear):
        model.fc = nn.Sequential(nn.Dropout(drop_rate), model.fc)
    return model


@cache
def _torchvision_names() -> frozenset[str]:
    import torchvision

    return frozenset(torchvision.models.list_models(module=torchvision.models))


@cache
def _timm_names() -> frozenset[str]:
    import timm

    return frozenset(timm.list_models())


def is_timm_model(name: str) -> bool:
    """A name that resolves to timm: neither a d2l net nor a `tv:` model."""
    return name not in _REGISTRY and torchvision_name(name) is None


def is_known_model(name: str) -> bool:
    if name in _REGISTRY:
        return True
    if torchvision_name(name) is not None:
        return torchvision_name(name) in _torchvision_names()
    return name.split(".", 1)[0] in _timm_names()  # a pretrained tag may follow the name


def model_choices_hint(name: str) -> str:
    """What to write instead of an unknown `name`: close matches and where the lists live."""
    candidates = list(_REGISTRY)
    candidates += [TORCHVISION_PREFIXES[0] + n for n in _torchvision_names()]
    candidates += list(_timm_names())
    return (
        f"{did_you_mean(name, candidates, n=5)}allowed: {', '.join(sorted(_REGISTRY))}, "
        "'tv:<torchvision model>' (or 'tv-<...>') (torchvision.models.list_models()) or any "
        "timm model (timm.list_models())"
    )
