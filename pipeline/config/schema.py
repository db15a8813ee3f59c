"""The params.yaml schema: typed, frozen groups, one per stage.

It imports nothing from the project but the model settings (pipeline.config.model_settings,
which imports nothing), so every module can depend on it. `pipeline.config.params` loads and
validates the file against it; each model's settings are `train.defaults` deep-merged with
`train.models.<name>` once, on load (`TrainParams.for_model`).
"""

from __future__ import annotations

import copy
import re
from pathlib import PurePosixPath
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from pipeline.config.model_settings import ModelParams, PositiveInt, Strict

DEVICE_PATTERN = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
MODEL_NAME_PATTERN = re.compile(r"[A-Za-z0-9_.:-]+")


def distinct(what: str) -> AfterValidator:
    """Validates a list as non-empty without repeats; the error says it holds `what`."""

    def check(values: list) -> list:
        if not values or len(set(values)) != len(values):
            raise ValueError(f"must be a non-empty list of distinct {what}")
        return values

    return AfterValidator(check)


Folds = Annotated[list[Annotated[int, Field(ge=0)]], distinct("fold numbers")]


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
    train_images: str = "."  # the folder in root that train.csv's image cells are relative to
    test_images: str = "."
    image_suffix: str = ""  # appended to each image cell to name its file: ".png" for bare ids
    image_col: str = "image"
    label_col: str = "label"
    submission_columns: list[str] | None = None  # null: [image_col, label_col]
    max_megapixels: Annotated[float, Field(gt=0)] = 40.0  # refused from the header

    @field_validator("train_csv", "test_csv")
    @classmethod
    def _relative_to_root(cls, table: str) -> str:
        # dvc.yaml joins them to the root as stage prepare's dependencies.
        if PurePosixPath(table.replace("\\", "/")).is_absolute():
            raise ValueError("must be relative to data.root, e.g. train.csv or ../train.csv")
        return table

    @field_validator("train_images", "test_images")
    @classmethod
    def _inside_root(cls, folder: str) -> str:
        # Stage prepare's data dependency is data.root: a folder outside it would go unwatched.
        path = PurePosixPath(folder.replace("\\", "/"))
        if path.is_absolute() or ".." in path.parts:
            raise ValueError("must be a folder inside data.root, e.g. train_images, or . for root")
        return folder

    @field_validator("image_suffix")
    @classmethod
    def _a_suffix(cls, suffix: str) -> str:
        if suffix and (not suffix.startswith(".") or "/" in suffix or "\\" in suffix):
            raise ValueError("must be empty or a file suffix such as .png")
        return suffix

    @field_validator("submission_columns", mode="before")
    @classmethod
    def _two_names(cls, names: Any) -> Any:
        # Before the type check, so `id,category` (a string) gets the example too.
        if names is not None and not (
            isinstance(names, list)
            and len(names) == len(set(names)) == 2
            and all(isinstance(n, str) and n.strip() for n in names)
        ):
            raise ValueError("must be two different, non-empty column names, e.g. [id, label]")
        return names

    @property
    def submission_header(self) -> list[str]:
        """The submission's columns: `submission_columns`, else train.csv's two."""
        return list(self.submission_columns or [self.image_col, self.label_col])


class SplitParams(Strict):
    n_splits: Annotated[int, Field(ge=2)] = 5
    shuffle: bool = True


class LoaderParams(Strict):
    """How batches are made; only `augment_on` changes the data stream (see
    pipeline.data.loaders)."""

    # auto: chosen for the machine by pipeline.training.device.resolve_num_workers
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
    # Each model's merged settings, or why they are invalid (reported by pipeline.config.params).
    _merged: dict[str, ModelParams | ValidationError] = PrivateAttr(default_factory=dict)

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

    @model_validator(mode="after")
    def _merge_models(self) -> TrainParams:
        for name, override in self.models.items():
            try:
                merged = deep_merge(self.defaults.model_dump(), override or {})
                self._merged[name] = ModelParams.model_validate(merged)
            except ValidationError as err:
                self._merged[name] = err
        return self

    def for_model(self, name: str) -> ModelParams:
        """`defaults` deep-merged with this model's overrides, as merged on load (`defaults`
        for a name train.models lacks).

        Raises:
            ValidationError: the merged settings are invalid.
        """
        merged = self._merged.get(name, self.defaults)
        if isinstance(merged, ValidationError):
            raise merged
        return merged


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


MetaFeature = Literal[
    "size", "shape", "outline", "turn_pairs", "disc", "widths", "rings", "blade", "colour"
]


MetaFeatures = Annotated[
    list[MetaFeature],
    distinct("groups: size, shape, outline, turn_pairs, disc, widths, rings, blade, colour"),
]


class MetaParams(Strict):
    """Stage `meta`: a classifier on image statistics, one more ensemble member."""

    enabled: bool = False
    features: MetaFeatures = ["size", "shape"]
    classifier: Literal["auto", "logistic", "lda"] = "auto"
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
