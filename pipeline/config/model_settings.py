"""One training run's settings: `ModelParams` and its groups, plus the TTA view names.

`train.defaults` and each `train.models.<name>` (pipeline.config.schema) are of this schema. It
imports nothing from the project (pipeline.config.schema imports only this module).
"""

from __future__ import annotations

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

PositiveInt = Annotated[int, Field(gt=0)]


NonNegativeFloat = Annotated[float, Field(ge=0)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


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
    # auto: stage cache measures whether the leaves stand upright (pipeline.data.orientation);
    # true: leave out the transforms and TTA views that turn them; false: keep every one.
    upright: bool | Literal["auto"] = "auto"
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
    # Checkpoints written before `crop_to_leaf` existed saw whole images.
    crop_to_leaf: bool = False
    epochs: PositiveInt = 10
    batch_size: PositiveInt = 64
    optimizer: OptimizerParams = OptimizerParams()
    scheduler: SchedulerParams = SchedulerParams()
    label_smoothing: Annotated[float, Field(ge=0, lt=1)] = 0.0
    drop_rate: Annotated[float, Field(ge=0, lt=1)] = 0.0
    drop_path_rate: Annotated[float, Field(ge=0, lt=1)] = 0.0
    mixup: MixupParams = MixupParams()
    ema: EmaParams = EmaParams()
    # Checkpoints written before `keep` existed kept the best epoch.
    keep: Literal["last", "best"] = "best"
    grad_clip_norm: Annotated[float, Field(gt=0)] | None = None
    grad_accum_steps: PositiveInt = 1
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
