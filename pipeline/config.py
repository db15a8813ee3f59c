"""The params.yaml schema: every stage reads its settings through `load_params()`.

The whole file is validated on load, so a typo or a wrong type in any group stops every stage
before it does any work, with one message per problem naming the key, the value and what is
allowed. Per-model settings are `train.defaults` deep-merged with `train.models.<name>`.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pipeline.cli import PipelineError
from pipeline.files import PARAMS_FILE

TTA_VIEWS = ("identity", "hflip", "vflip", "rot90", "rot180", "rot270", "transpose")
DEVICE_PATTERN = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")

PositiveInt = Annotated[int, Field(gt=0)]
NonNegativeFloat = Annotated[float, Field(ge=0)]


class ParamsError(PipelineError):
    """params.yaml is missing, unreadable or invalid; the message lists every problem."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BaseParams(Strict):
    seed: int = 42


class GenerateParams(Strict):
    """The embedded synthetic leaf dataset (stage `generate`)."""

    num_species: Annotated[int, Field(ge=2, le=48)] = 10
    images_per_species: Annotated[int, Field(ge=4)] = 40
    image_size: Annotated[int, Field(ge=32, le=1024)] = 96
    test_share: Annotated[float, Field(gt=0, lt=1)] = 0.25
    seed: int = 0


class DataParams(Strict):
    """Which competition folder `prepare` reads, and how its CSVs are laid out."""

    root: str = "data/synthetic"
    train_csv: str = "train.csv"
    test_csv: str = "test.csv"
    sample_submission: str | None = "sample_submission.csv"
    image_col: str = "image"
    label_col: str = "label"


class SplitParams(Strict):
    n_splits: Annotated[int, Field(ge=2)] = 5
    shuffle: bool = True


class OptimizerParams(Strict):
    name: Literal["adamw", "adam", "sgd"] = "adamw"
    lr: Annotated[float, Field(gt=0)] = 1e-3
    weight_decay: NonNegativeFloat = 0.05
    momentum: Annotated[float, Field(ge=0, lt=1)] = 0.9


class SchedulerParams(Strict):
    name: Literal["cosine", "constant"] = "cosine"
    warmup_epochs: NonNegativeFloat = 1.0
    min_lr_ratio: Annotated[float, Field(ge=0, le=1)] = 0.01


class TransformSpec(BaseModel):
    """One albumentations transform: `{name: HorizontalFlip, p: 0.5}`; other keys are its args."""

    model_config = ConfigDict(extra="allow", frozen=True)
    name: str

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(self.model_extra or {})

    @model_validator(mode="after")
    def _builds(self) -> TransformSpec:
        from pipeline.data import create_transform  # albumentations is a heavy import

        create_transform(self, image_size=64)  # the size only fills in defaults
        return self


class AugmentParams(Strict):
    train: list[TransformSpec] = []
    eval: list[TransformSpec] = []


class ModelParams(Strict):
    """Everything one (model, fold) training run depends on; see params.yaml for meanings."""

    backbone: str | None = None
    pretrained: bool = False
    image_size: Annotated[int, Field(ge=16, le=1024)] = 64
    keep_aspect: bool = True
    epochs: PositiveInt = 10
    batch_size: PositiveInt = 64
    optimizer: OptimizerParams = OptimizerParams()
    scheduler: SchedulerParams = SchedulerParams()
    label_smoothing: Annotated[float, Field(ge=0, lt=1)] = 0.0
    drop_rate: Annotated[float, Field(ge=0, lt=1)] = 0.0
    amp: bool = True
    augment: AugmentParams = AugmentParams()
    tta: list[Literal[TTA_VIEWS]] = ["identity"]  # type: ignore[valid-type]

    @field_validator("tta")
    @classmethod
    def _tta_not_empty(cls, views: list[str]) -> list[str]:
        if not views:
            raise ValueError(f"needs at least one view; allowed: {', '.join(TTA_VIEWS)}")
        return views


class TrainParams(Strict):
    models: dict[str, dict[str, Any] | None]
    folds: list[Annotated[int, Field(ge=0)]] = [0, 1, 2, 3, 4]
    device: str = "auto"
    num_workers: Annotated[int, Field(ge=0)] = 2
    deterministic: bool = False
    defaults: ModelParams = ModelParams()

    @field_validator("device")
    @classmethod
    def _device_known(cls, device: str) -> str:
        if not DEVICE_PATTERN.match(device):
            raise ValueError("allowed: auto, cpu, cuda, cuda:N, mps")
        return device

    @field_validator("folds")
    @classmethod
    def _folds_unique(cls, folds: list[int]) -> list[int]:
        if not folds or len(set(folds)) != len(folds):
            raise ValueError("must be a non-empty list of distinct fold numbers")
        return folds

    @field_validator("models")
    @classmethod
    def _models_not_empty(cls, models: dict) -> dict:
        if not models:
            raise ValueError("list at least one model, e.g. `d2l_resnet11: {}`")
        return models

    def for_model(self, name: str) -> ModelParams:
        """`defaults` deep-merged with this model's overrides (already validated on load)."""
        merged = _deep_merge(self.defaults.model_dump(), self.models.get(name) or {})
        return ModelParams.model_validate(merged)


class EnsembleParams(Strict):
    average: Literal["logits", "probs"] = "logits"


class Params(Strict):
    base: BaseParams = BaseParams()
    generate: GenerateParams = GenerateParams()
    data: DataParams = DataParams()
    split: SplitParams = SplitParams()
    train: TrainParams
    ensemble: EnsembleParams = EnsembleParams()


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _format_errors(err: ValidationError, prefix: str = "") -> list[str]:
    lines = []
    for e in err.errors():
        key = prefix + ".".join(str(part) for part in e["loc"])
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            lines.append(f"{key}: unknown key (value {e['input']!r}); check the spelling")
        elif e["type"] == "missing":
            lines.append(f"{key}: required key is missing")
        else:
            lines.append(f"{key} = {e['input']!r}: {msg}")
    return lines


def _check_models(params: Params) -> list[str]:
    """Each model's merged settings validate and name a backbone the registry knows."""
    from pipeline.models import is_known_model, model_choices_hint

    problems = []
    for name, override in params.train.models.items():
        if override is not None and not isinstance(override, dict):
            problems.append(f"train.models.{name} = {override!r}: must be a mapping or {{}}")
            continue
        try:
            merged = params.train.for_model(name)
        except ValidationError as err:
            problems += _format_errors(err, prefix=f"train.models.{name}.")
            continue
        backbone = merged.backbone or name
        if not is_known_model(backbone):
            key = f"train.models.{name}" + (".backbone" if merged.backbone else "")
            problems.append(f"{key}: unknown backbone {backbone!r}; {model_choices_hint(backbone)}")
    return problems


def _check_cross_group(params: Params) -> list[str]:
    problems = []
    bad_folds = [f for f in params.train.folds if f >= params.split.n_splits]
    if bad_folds:
        problems.append(
            f"train.folds = {params.train.folds}: folds {bad_folds} do not exist with "
            f"split.n_splits = {params.split.n_splits}; allowed: 0..{params.split.n_splits - 1}"
        )
    return problems


def parse_params(raw: Any, source: str = str(PARAMS_FILE)) -> Params:
    """Validate a params mapping; raise ParamsError listing every problem found."""
    if not isinstance(raw, dict):
        raise ParamsError(
            f"{source}: expected a mapping of parameter groups, got {type(raw).__name__}"
        )
    try:
        params = Params.model_validate(raw)
    except ValidationError as err:
        raise ParamsError(_report(source, _format_errors(err))) from None
    problems = _check_models(params) + _check_cross_group(params)
    if problems:
        raise ParamsError(_report(source, problems))
    return params


def _report(source: str, problems: list[str]) -> str:
    return f"invalid parameters in {source}:\n" + "\n".join(f"  - {p}" for p in problems)


def load_params(path: Path | str = PARAMS_FILE) -> Params:
    """Read and validate params.yaml."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ParamsError(f"{path}: not found; run the stages from the project root") from None
    except yaml.YAMLError as err:
        raise ParamsError(f"{path}: not valid YAML: {err}") from None
    return parse_params(raw, source=str(path))
