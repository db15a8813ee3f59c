"""The checks of params.yaml that need the model registry, albumentations or the disk.

`load_params()` validates everything else without importing either; the stages and tools that
build models or transforms load their params with `load_checked_params()`, and so does stage
`check`, the first of the pipeline, so a bad backbone, transform or `pretrained:` path stops
`dvc repro` before any stage deletes an output.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.config.params import PARAMS_FILE, load_params
from pipeline.config.schema import Params
from pipeline.data.transforms import create_transform
from pipeline.io.console import PipelineError
from pipeline.models.registry import is_known_model, is_timm_model, model_choices_hint
from pipeline.models.weights import find_weights_file


def backbone_problems(params: Params) -> list[str]:
    """Each model's backbone is one the registry knows, and a timm one if it has stochastic
    depth (`drop_path_rate`)."""
    problems = []
    for name, override in params.train.models.items():
        merged = params.train.for_model(name)
        backbone = merged.backbone or name
        if not is_known_model(backbone):
            key = f"train.models.{name}" + (".backbone" if merged.backbone else "")
            problems.append(f"{key}: unknown backbone {backbone!r}; {model_choices_hint(backbone)}")
        elif merged.drop_path_rate and not is_timm_model(backbone):
            where = (
                f"train.models.{name}" if "drop_path_rate" in (override or {}) else "train.defaults"
            )
            problems.append(
                f"{where}.drop_path_rate = {merged.drop_path_rate}: only timm models have "
                f"stochastic depth, and {backbone} is not one; set train.models.{name}."
                "drop_path_rate: 0"
            )
    return problems


def weights_problems(params: Params) -> list[str]:
    """Each `pretrained:` path names a weights file, so a typo stops at stage check."""
    problems = []
    for name in params.train.models:
        merged = params.train.for_model(name)
        if isinstance(merged.pretrained, bool):
            continue
        try:
            find_weights_file(merged.pretrained, merged.backbone or name)
        except PipelineError as err:
            problem = str(err).removeprefix(f"pretrained weights {merged.pretrained!r}: ")
            problems.append(f"train.models.{name}.pretrained = {merged.pretrained!r}: {problem}")
    return problems


def transform_problems(params: Params) -> list[str]:
    """Each augmentation entry builds, named by where it is set (defaults, or a model)."""
    groups = {"train.defaults": params.train.defaults.augment}
    for name, override in params.train.models.items():
        if "augment" in (override or {}):
            groups[f"train.models.{name}"] = params.train.for_model(name).augment
    problems = []
    for key, augment in groups.items():
        for split, specs in (("train", augment.train), ("eval", augment.eval)):
            for index, spec in enumerate(specs):
                try:
                    create_transform(spec, image_size=64)  # the size only fills in defaults
                except ValueError as err:
                    problems.append(f"{key}.augment.{split}.{index} = {spec.name!r}: {err}")
    return problems


CHECKS = (backbone_problems, weights_problems, transform_problems)


def load_checked_params(path: Path | str = PARAMS_FILE) -> Params:
    """params.yaml, validated in full: the schema plus backbones, `pretrained:` paths and
    transforms."""
    return load_params(path, checks=CHECKS)
