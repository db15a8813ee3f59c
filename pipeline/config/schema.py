"""The params.yaml schema: typed, frozen groups, one per stage, plus the TTA view names.

It imports nothing from the project, so every module can depend on it. `pipeline.config.params`
loads and validates the file against it; per-model settings are `train.defaults` deep-merged with
`train.models.<name>` (`TrainParams.for_model`).
"""

from __future__ import annotations

import copy
import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

DEVICE_PATTERN = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
MODEL_NAME_PATTERN = re.compile(r"[A-Za-z0-9_.:-]+")


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
    max_megapixels: Annotated[float, Field(gt=0)] = 40.0  # refused from the header


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


GEOMETRIC_VIEWS = ("identity", "hflip", "vflip", "rot90", "rot180", "rot270", "transpose")
SCALE_VIEW = re.compile(r"scale(\d+(?:\.\d+)?)")


SCALE_LIMITS = (0.5, 2.0)
ALLOWED_VIEWS = ", ".join(GEOMETRIC_VIEWS) + (
    f", scale<f> with {SCALE_LIMITS[0]} <= f <= {SCALE_LIMITS[1]} "
    "(scale0.9 zooms in, scale1.1 zooms out)"
)


def view_scale(view: str) -> float | None:
    """The zoom factor of a `scale<f>` view, or None for a geometric view.

    Raises:
        ValueError: `view` is neither, naming the allowed views.
    """
    if view in GEOMETRIC_VIEWS:
        return None
    match = SCALE_VIEW.fullmatch(view)
    if match and SCALE_LIMITS[0] <= float(match[1]) <= SCALE_LIMITS[1]:
        return float(match[1])
    raise ValueError(f"unknown TTA view {view!r}; allowed: {ALLOWED_VIEWS}")


def _known_view(view: str) -> str:
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
        if not views:
            raise ValueError(f"needs at least one view; allowed: {ALLOWED_VIEWS}")
        return views


class ModelParams(Strict):
    """Everything one (model, fold) training run depends on; see params.yaml for meanings."""

    backbone: str | None = None
    # True: the timm/torchvision hub; a path: a local weights file or folder
    # (pipeline.models.weights)
    pretrained: bool | Annotated[str, Field(min_length=1)] = False
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
    """DataLoader settings; none of them changes the data stream (see pipeline.data.loaders)."""

    # auto: chosen for the machine by pipeline.data.loaders.resolve_num_workers
    num_workers: Literal["auto"] | Annotated[int, Field(ge=0)] = "auto"
    pin_memory: bool = True  # on CUDA only: page-locked batches copy to the GPU asynchronously
    persistent_workers: bool = True  # with workers: keep them between epochs
    prefetch_factor: PositiveInt = 2  # with workers: batches each one prepares ahead
    # where images are augmented; pipeline.data.device_data.augment_path decides `auto`
    augment_on: Literal["auto", "device", "workers"] = "auto"


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
        # A name travels through dvc.yaml's command line (--model) and names a folder.
        bad = [
            name
            for name in models
            if not MODEL_NAME_PATTERN.fullmatch(str(name)) or not str(name).strip(".")
        ]
        if bad:
            raise ValueError(
                f"model name(s) {bad} may use only letters, digits and _ . : - (not only dots) "
                "(they become a command-line argument and a folder name)"
            )
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


MetaFeature = Literal["size", "shape", "outline", "colour"]


MetaFeatures = Annotated[list[MetaFeature], distinct("groups: size, shape, outline, colour")]


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
