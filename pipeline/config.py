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
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from pipeline.cli import PipelineError
from pipeline.files import PARAMS_FILE

DEVICE_PATTERN = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")

PositiveInt = Annotated[int, Field(gt=0)]
NonNegativeFloat = Annotated[float, Field(ge=0)]


def distinct(what: str) -> AfterValidator:
    """Validates a list as non-empty without repeats; the error says it holds `what`."""

    def check(values: list) -> list:
        if not values or len(set(values)) != len(values):
            raise ValueError(f"must be a non-empty list of distinct {what}")
        return values

    return AfterValidator(check)


Folds = Annotated[list[Annotated[int, Field(ge=0)]], distinct("fold numbers")]


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
    head_lr: Annotated[float, Field(gt=0)] | None = None  # the classifier head's; None: lr


class SchedulerParams(Strict):
    name: Literal["cosine", "onecycle", "constant"] = "cosine"
    warmup_epochs: NonNegativeFloat = 1.0
    min_lr_ratio: Annotated[float, Field(ge=0, le=1)] = 0.01  # cosine's floor
    div_factor: Annotated[float, Field(ge=1)] = 25.0  # onecycle starts at lr / div_factor
    final_div_factor: Annotated[float, Field(ge=1)] = 1e4  # and ends at start / final_div_factor


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


class MixupParams(Strict):
    """timm's batch MixUp/CutMix (timm.data.Mixup); off while both alphas are 0."""

    mixup_alpha: NonNegativeFloat = 0.0
    cutmix_alpha: NonNegativeFloat = 0.0
    prob: Annotated[float, Field(ge=0, le=1)] = 1.0
    switch_prob: Annotated[float, Field(ge=0, le=1)] = 0.5

    @property
    def enabled(self) -> bool:
        return self.mixup_alpha > 0 or self.cutmix_alpha > 0


class EmaParams(Strict):
    """An exponential moving average of the weights (timm.utils.ModelEmaV3), updated per step."""

    enabled: bool = False
    decay: Annotated[float, Field(ge=0, lt=1)] = 0.999
    warmup: bool = True


def _known_view(view: str) -> str:
    from pipeline.data import view_scale  # albumentations is a heavy import

    view_scale(view)
    return view


class TtaParams(Strict):
    """Test-time augmentation: the views averaged at prediction, and in which space."""

    views: list[Annotated[str, AfterValidator(_known_view)]] = ["identity"]
    average: Literal["logits", "probs"] = "logits"

    @model_validator(mode="before")
    @classmethod
    def _views_shorthand(cls, value: Any) -> Any:
        # `tta: [identity, hflip]` means `tta: {views: [identity, hflip]}`; checkpoints written
        # before `average` existed store it that way.
        return {"views": value} if isinstance(value, list) else value

    @field_validator("views")
    @classmethod
    def _views_not_empty(cls, views: list[str]) -> list[str]:
        from pipeline.data import ALLOWED_VIEWS

        if not views:
            raise ValueError(f"needs at least one view; allowed: {ALLOWED_VIEWS}")
        return views


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
    mixup: MixupParams = MixupParams()
    ema: EmaParams = EmaParams()
    grad_clip_norm: Annotated[float, Field(gt=0)] | None = None
    amp: bool = True
    augment: AugmentParams = AugmentParams()
    tta: TtaParams = TtaParams()

    @field_validator("mixup")
    @classmethod
    def _mixup_pairs_whole_batches(cls, mixup: MixupParams, info: ValidationInfo) -> MixupParams:
        batch_size = info.data.get("batch_size")
        if mixup.enabled and batch_size is not None and batch_size % 2:
            # timm's batch mode mixes row i with row n-1-i, so it needs an even batch.
            raise ValueError(
                f"needs an even batch_size, but batch_size is {batch_size}; "
                "make it even or set mixup_alpha and cutmix_alpha to 0"
            )
        return mixup


class LoaderParams(Strict):
    """DataLoader settings; none of them changes the data stream (see pipeline.data)."""

    num_workers: Annotated[int, Field(ge=0)] = 2
    pin_memory: bool = True  # on CUDA only: page-locked batches copy to the GPU asynchronously
    persistent_workers: bool = True  # with workers: keep them between epochs
    prefetch_factor: PositiveInt = 2  # with workers: batches each one prepares ahead


class TrainParams(Strict):
    models: dict[str, dict[str, Any] | None]
    folds: Folds = [0, 1, 2, 3, 4]
    device: str = "auto"
    launcher: Annotated[str, Field(min_length=1)] = "python3"  # dvc.yaml's, not train.py's
    loader: LoaderParams = LoaderParams()
    channels_last: Literal["auto"] | bool = "auto"
    compile: bool = False
    deterministic: bool = False
    defaults: ModelParams = ModelParams()

    @field_validator("device")
    @classmethod
    def _device_known(cls, device: str) -> str:
        if not DEVICE_PATTERN.match(device):
            raise ValueError("allowed: auto, cpu, cuda, cuda:N, mps")
        return device

    @field_validator("models")
    @classmethod
    def _models_not_empty(cls, models: dict) -> dict:
        if not models:
            raise ValueError("list at least one model, e.g. `d2l_resnet11: {}`")
        return models

    def for_model(self, name: str) -> ModelParams:
        """`defaults` deep-merged with this model's overrides (already validated on load)."""
        merged = deep_merge(self.defaults.model_dump(), self.models.get(name) or {})
        return ModelParams.model_validate(merged)


class EnsembleParams(Strict):
    average: Literal["logits", "probs"] = "logits"
    weights: Literal["equal", "fit"] = "equal"
    rounds: Annotated[int, Field(ge=1)] = 100


class PseudoParams(Strict):
    """The optional pseudo-label round (stage `pseudo`); see params.yaml for meanings."""

    enabled: bool = False
    threshold: Annotated[float, Field(gt=0, le=1)] = 0.9
    epochs: PositiveInt = 3
    lr_scale: Annotated[float, Field(gt=0)] = 0.1


META_MODEL = "meta"  # stage meta's member of the ensemble: models/meta/fold<k>/
MetaFeature = Literal["size", "shape", "colour"]
MetaFeatures = Annotated[list[MetaFeature], distinct("groups: size, shape, colour")]


class MetaParams(Strict):
    """Stage `meta`: a logistic regression on image statistics, one more ensemble member."""

    enabled: bool = False
    features: MetaFeatures = ["size", "shape"]
    C: Annotated[float, Field(gt=0)] = 10.0


class CacheParams(Strict):
    """Stage `cache`: every image decoded once, fitted to `image_size`, in one uint8 array."""

    enabled: bool = True
    image_size: Annotated[int, Field(ge=16, le=1024)] | None = None  # None: the largest model's


class Params(Strict):
    base: BaseParams = BaseParams()
    generate: GenerateParams = GenerateParams()
    data: DataParams = DataParams()
    split: SplitParams = SplitParams()
    cache: CacheParams = CacheParams()
    train: TrainParams
    meta: MetaParams = MetaParams()
    ensemble: EnsembleParams = EnsembleParams()
    pseudo: PseudoParams = PseudoParams()


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
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
    if META_MODEL in params.train.models:
        problems.append(
            f"train.models.{META_MODEL}: the name is taken by stage meta's model "
            f"(models/{META_MODEL}); name the network differently"
        )
    bad_folds = [f for f in params.train.folds if f >= params.split.n_splits]
    if bad_folds:
        problems.append(
            f"train.folds = {params.train.folds}: folds {bad_folds} do not exist with "
            f"split.n_splits = {params.split.n_splits}; allowed: 0..{params.split.n_splits - 1}"
        )
    return problems


def _model_image_sizes(params: Params) -> dict[str, int]:
    """Each model's merged image_size (models whose settings are invalid are left out)."""
    sizes = {}
    for name in params.train.models:
        try:
            sizes[name] = params.train.for_model(name).image_size
        except ValidationError:  # reported by _check_models
            continue
    return sizes


def resolve_cache_size(params: Params) -> int | None:
    """The side stage `cache` fits images to: cache.image_size, else the largest model's
    image_size; None when the cache is off."""
    if not params.cache.enabled:
        return None
    return params.cache.image_size or max(_model_image_sizes(params).values(), default=None)


def _check_cache(params: Params) -> list[str]:
    """A model cannot train at a larger size than the cache holds: it would be upsampled."""
    size = resolve_cache_size(params)
    if size is None:
        return []
    return [
        f"train.models.{name}.image_size = {model_size} is larger than cache.image_size = "
        f"{size}; raise cache.image_size to at least {model_size}, set it to null (the "
        "largest model's size) or set cache.enabled: false"
        for name, model_size in _model_image_sizes(params).items()
        if model_size > size
    ]


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
    problems = _check_models(params) + _check_cross_group(params) + _check_cache(params)
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
