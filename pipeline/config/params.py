"""Loading params.yaml: every stage reads its settings through `load_params()`.

The whole file is validated on load (pipeline.config.schema), so a typo or a wrong type in any group
stops every stage before it does any work, with one message per problem naming the key, the
value and what is allowed. Checks that need the model registry or albumentations live in
pipeline.config.checks.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from pipeline.config.model_settings import ModelParams
from pipeline.config.schema import META_MODEL, Params

PARAMS_FILE = Path("params.yaml")


class ParamsError(Exception):
    """params.yaml is missing, unreadable or invalid; the message lists every problem."""


def _keys_at(schema: type[BaseModel], path: tuple) -> list[str]:
    """The keys allowed in the group at `path` of `schema` (empty where it is no group)."""
    for part in path:
        field = schema.model_fields.get(str(part))
        annotation = field.annotation if field is not None else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        schema = annotation
    return list(schema.model_fields)


def _unknown_key(e: dict, key: str, schema: type[BaseModel]) -> str:
    *group, name = e["loc"]
    close = difflib.get_close_matches(str(name), _keys_at(schema, tuple(group)), n=1)
    hint = f"did you mean {close[0]!r}?" if close else "check the spelling"
    return f"{key}: unknown key (value {e['input']!r}); {hint}"


# pydantic reports a value that no member of a union accepts once per member, the member's
# tag last in the error's location: `channels_last.bool`, `num_workers.constrained-int`.
UNION_MEMBER = re.compile(r"bool|int|float|str|constrained-\w+|literal\[.*\]")


def _allowed_by(member: str, msg: str) -> str:
    """What one member of a union allows, in params.yaml's words."""
    if member == "bool":
        return "true | false"
    if member == "constrained-int":
        return "an integer " + msg.removeprefix("Input should be ")
    if member == "constrained-str":
        return "a string that " + msg.removeprefix("String ")
    return msg.removeprefix("Input should be ")


def _merge_union_members(errors: list[dict]) -> list[dict]:
    """One error per key that a union refused, listing what each member allows."""
    merged: dict[Any, dict] = {}
    for index, e in enumerate(errors):
        *loc, last = e["loc"]
        if not (isinstance(last, str) and UNION_MEMBER.fullmatch(last)):
            merged[index] = e
            continue
        allowed = _allowed_by(last, e["msg"])
        if tuple(loc) in merged:
            merged[tuple(loc)]["msg"] += f" | {allowed}"
        else:
            merged[tuple(loc)] = {**e, "loc": tuple(loc), "msg": f"allowed: {allowed}"}
    return list(merged.values())


def _format_errors(
    err: ValidationError, prefix: str = "", schema: type[BaseModel] = Params
) -> list[str]:
    lines = []
    for e in _merge_union_members(err.errors()):
        key = prefix + ".".join(str(part) for part in e["loc"])
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            lines.append(_unknown_key(e, key, schema))
        elif e["type"] == "missing":
            lines.append(f"{key}: required key is missing")
        else:
            lines.append(f"{key} = {e['input']!r}: {msg}")
    return lines


def _split_name(name: str, override: dict) -> str | None:
    """The message for a model name that `dvc exp run -S` split at a dot (`-S
    '+train.models.convnext_tiny.fb_in22k={}'` arrives as convnext_tiny: {fb_in22k: {}})."""
    tags = [key for key, value in override.items() if key not in ModelParams.model_fields]
    tags = [key for key in tags if isinstance(override[key], dict | None)]
    if not tags:
        return None
    full = f"{name}.{tags[0]}"
    return (
        f"train.models.{full}: `dvc exp run -S` reads the dots of a model name as nested keys; "
        f"name the model without them and give the full name as its backbone: -S "
        f"'+train.models.{full.replace('.', '_')}={{backbone: {full}}}' (in params.yaml the "
        f"key {full!r} works as it is)"
    )


def _check_models(params: Params) -> list[str]:
    """Each model's merged settings validate (backbones and transforms: pipeline.config.checks)."""
    problems = []
    for name, override in params.train.models.items():  # the schema made each a dict or None
        split = _split_name(name, override or {})
        if split:
            problems.append(split)
            continue
        try:
            params.train.for_model(name)
        except ValidationError as err:
            problems += _format_errors(err, f"train.models.{name}.", ModelParams)
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


def _model_values(params: Params, key: str) -> dict[str, Any]:
    """Each model's merged setting `key` (models whose settings are invalid are left out)."""
    values = {}
    for name in params.train.models:
        try:
            values[name] = getattr(params.train.for_model(name), key)
        except ValidationError:  # reported by _check_models
            continue
    return values


def resolve_cache_size(params: Params) -> int | None:
    """The side stage `cache` fits images to: cache.image_size, else the largest model's
    image_size; None when the cache is off."""
    if not params.cache.enabled:
        return None
    return params.cache.image_size or max(
        _model_values(params, "image_size").values(), default=None
    )


def resolve_crop_to_leaf(params: Params) -> bool:
    """Whether stage cache cuts its images to the leaf: the models' crop_to_leaf, which
    _check_cache makes one value while the cache is on (else the first model's)."""
    crops = _model_values(params, "crop_to_leaf")
    return next(iter(crops.values()), params.train.defaults.crop_to_leaf)


def _check_cache(params: Params) -> list[str]:
    """A model cannot train at a larger size than the cache holds: it would be upsampled; and
    the cache holds one crop for every model."""
    size = resolve_cache_size(params)
    if size is None:
        return []
    problems = [
        f"train.models.{name}.image_size = {model_size} is larger than cache.image_size = "
        f"{size}; raise cache.image_size to at least {model_size}, set it to null (the "
        "largest model's size) or set cache.enabled: false"
        for name, model_size in _model_values(params, "image_size").items()
        if model_size > size
    ]
    crops = _model_values(params, "crop_to_leaf")
    first, crop = next(iter(crops.items()), (None, None))
    problems += [
        f"train.models.{name}.crop_to_leaf = {str(other).lower()} differs from {first}'s "
        f"{str(crop).lower()}; stage cache holds one crop for every model: set crop_to_leaf "
        "in train.defaults only, or set cache.enabled: false"
        for name, other in crops.items()
        if other != crop
    ]
    return problems


def parse_params(
    raw: Any,
    source: str = str(PARAMS_FILE),
    checks: tuple[Callable[[Params], list[str]], ...] = (),
) -> Params:
    """Validate a params mapping; raise ParamsError listing every problem found.

    Args:
        raw: the parsed YAML.
        source: the file named in the message.
        checks: more checks of the valid params, each returning its problems (pipeline.config.checks
            adds the ones that need the model registry and albumentations).
    """
    if not isinstance(raw, dict):
        raise ParamsError(
            f"{source}: expected a mapping of parameter groups, got {type(raw).__name__}"
        )
    try:
        params = Params.model_validate(raw)
    except ValidationError as err:
        raise ParamsError(_report(source, _format_errors(err))) from None
    problems = _check_models(params) + _check_cross_group(params) + _check_cache(params)
    if not problems:
        problems = [problem for check in checks for problem in check(params)]
    if problems:
        raise ParamsError(_report(source, problems))
    return params


def left_out_keys(settings: BaseModel, prefix: str = "") -> list[str]:
    """The keys the file left out, which took the schema's fallbacks: a whole group as one key.

    Keys whose fallback is None (not set: `train.defaults.backbone`) are not counted.
    """
    keys = []
    for name, field in type(settings).model_fields.items():
        value = getattr(settings, name)
        if name not in settings.model_fields_set:
            keys += [] if field.default is None else [prefix + name]
        elif isinstance(value, BaseModel):
            keys += left_out_keys(value, f"{prefix}{name}.")
    return keys


def _report(source: str, problems: list[str]) -> str:
    return f"invalid parameters in {source}:\n" + "\n".join(f"  - {p}" for p in problems)


def load_params(
    path: Path | str = PARAMS_FILE, checks: tuple[Callable[[Params], list[str]], ...] = ()
) -> Params:
    """Read and validate params.yaml (see `parse_params` for `checks`)."""
    path = Path(path)
    raw = read_yaml(path, "not found; run the stages from the project root")
    return parse_params(raw, source=str(path), checks=checks)


def read_yaml(path: Path, missing: str = "not found") -> Any:
    """A YAML file's data; a missing file (`missing` says why it matters) or bad YAML is one
    ParamsError."""
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ParamsError(f"{path}: {missing}") from None
    except yaml.YAMLError as err:
        raise ParamsError(f"{path}: not valid YAML: {err}") from None
