"""Presets (presets/<name>.yaml): reading one, merging it over params.yaml, and the
`dvc exp run -S` overrides that make the same change. `leaf preset` (pipeline/tools/presets.py)
runs them.

A preset holds only the keys it changes. It is deep-merged over params.yaml, except that a
`train.models` mapping replaces params.yaml's whole: a preset that lists models means "train
these models".
"""

from __future__ import annotations

import argparse
import copy
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml

from pipeline.config.params import PARAMS_FILE, read_yaml
from pipeline.config.schema import deep_merge
from pipeline.io.console import PipelineError

PRESETS_DIR = Path("presets")
MODELS = ("train", "models")  # a preset's mapping here replaces params.yaml's whole


def _read_yaml(path: Path, what: str) -> dict[str, Any]:
    data = read_yaml(path)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise PipelineError(
            f"{path}: a {what} must be a mapping of keys, got {type(data).__name__}"
        )
    return data


def preset_path(name_or_path: str | Path) -> Path:
    """The file of a preset: `name_or_path` itself when it exists, else presets/<name>.yaml."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    named = PRESETS_DIR / (path.name if path.suffix in (".yaml", ".yml") else f"{path.name}.yaml")
    if str(path.parent) == "." and named.is_file():
        return named
    known = ", ".join(sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))) or "none"
    raise PipelineError(
        f"preset {name_or_path!r} not found: not a file, and not in {PRESETS_DIR}/ (known: {known})"
    )


def load_preset(name_or_path: str | Path) -> dict[str, Any]:
    """A preset's keys: a name from presets/ (`leaf-silhouettes`) or the path of a YAML file."""
    return _read_yaml(preset_path(name_or_path), "preset")


def read_params_file() -> dict[str, Any]:
    """params.yaml's data, as a mapping."""
    return _read_yaml(PARAMS_FILE, "params file")


def _get(tree: dict[str, Any], keys: tuple[str, ...]) -> Any:
    for key in keys:
        if not isinstance(tree, dict) or key not in tree:
            return None
        tree = tree[key]
    return tree


def merged_params(preset: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    """`preset` deep-merged over `base` (params.yaml), its `train.models` replacing base's whole."""
    merged = deep_merge(base, preset)
    train = preset.get("train")
    if isinstance(train, dict) and "models" in train and isinstance(merged.get("train"), dict):
        merged["train"]["models"] = copy.deepcopy(train["models"])
    return merged


def flow(value: Any) -> str:
    """`value` in YAML flow style that Hydra's override grammar (dvc exp run -S) reads back alike.

    Floats are written without an exponent (Hydra reads `1e-05` as a string); strings are quoted
    when bare they would read as something else or hold characters the grammar reserves.
    """
    if isinstance(value, dict):
        return "{" + ", ".join(f"{flow(str(k))}: {flow(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(flow(v) for v in value) + "]"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise PipelineError(f"{value!r}: not a value dvc exp run -S can set")
        text = format(Decimal(repr(value)), "f")
        return text if "." in text else f"{text}.0"
    text = str(value)
    plain = (
        text
        and all(c.isalnum() or c in "_-./" for c in text)
        and yaml.safe_load(text) == text
        and text[0] not in "-."
    )
    if plain:
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def preset_overrides(preset: dict[str, Any], base: dict[str, Any]) -> list[str]:
    """The `dvc exp run -S` arguments that turn `base` (params.yaml) into `merged_params`.

    One `key=value` per changed leaf (a list is one value); `+key=value` for a key `base`
    lacks. Under train.models, whose mapping replaces base's: `+train.models.<name>=...` for each
    model that is new or differs, `~train.models.<name>` for each of base's that is dropped or
    differs (Hydra merges a mapping into an existing one, so a changed model is removed, then
    added). Keys whose value equals base's give nothing.
    """
    overrides: list[str] = []
    _overrides(preset, base, (), overrides)
    return overrides


def _overrides(preset: dict, base: Any, path: tuple[str, ...], out: list[str]) -> None:
    for key, value in preset.items():
        keys = (*path, str(key))
        dotted = ".".join(keys)
        present = isinstance(base, dict) and key in base
        old = base.get(key) if present else None
        if keys == MODELS and isinstance(value, dict) and present and isinstance(old, dict):
            for name, model in value.items():
                if name not in old:
                    out.append(f"+{dotted}.{name}={flow(model or {})}")
                elif (model or {}) != (old[name] or {}):
                    out += [f"~{dotted}.{name}", f"+{dotted}.{name}={flow(model or {})}"]
            out += [f"~{dotted}.{name}" for name in old if name not in value]
        elif not present:
            out.append(f"+{dotted}={flow(value)}")
        elif isinstance(value, dict) and isinstance(old, dict):
            _overrides(value, old, keys, out)
        elif value != old:
            out.append(f"{dotted}={flow(value)}")


def changes(merged: dict[str, Any], base: dict[str, Any], path: str = "") -> list[str]:
    """`key: old -> new` for each leaf (or train.models entry) of `merged` that differs."""
    lines = []
    for key in [*base, *(k for k in merged if k not in base)]:
        dotted = f"{path}{key}"
        old, new = base.get(key, "(absent)"), merged.get(key, "(removed)")
        if isinstance(old, dict) and isinstance(new, dict):
            lines += changes(new, old, f"{dotted}.")
        elif old != new:
            lines.append(f"{dotted}: {_show(old)} -> {_show(new)}")
    return lines


def _show(value: Any) -> str:
    return value if value in ("(absent)", "(removed)") else flow(value)


def add_set_argument(parser: argparse.ArgumentParser) -> None:
    """-S/--set KEY=VALUE (repeatable): keys laid over the preset, as `dvc exp run -S` takes."""
    parser.add_argument(
        "-S",
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="one more key over the preset (repeatable; the value is YAML: train.folds=[0]); "
        "~train.models.NAME drops a model",
    )


def set_dotted(preset: dict[str, Any], base: dict[str, Any], assignment: str) -> None:
    """Apply one `-S` of the command line to `preset`, as `dvc exp run -S` words it: KEY=VALUE
    (the value read as YAML; a leading `+`, which DVC wants for a key params.yaml lacks, is
    taken and not needed) or `~train.models.NAME`, which drops that model."""
    if assignment.startswith("~"):
        drop_model(preset, base, assignment)
        return
    key, sep, text = assignment.removeprefix("+").partition("=")
    keys = tuple(key.strip().split("."))
    if not sep or not all(keys):
        raise PipelineError(f"-S {assignment!r}: expected KEY=VALUE, e.g. train.folds=[0]")
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise PipelineError(f"-S {assignment!r}: the value is not valid YAML: {err}") from None
    if keys[:2] == MODELS and len(keys) > 2:
        models_to_edit(preset, base)
    tree = preset
    for part in keys[:-1]:
        if tree.get(part) is None:
            tree[part] = {}
        if not isinstance(tree[part], dict):
            raise PipelineError(f"-S {assignment!r}: {part} is not a mapping")
        tree = tree[part]
    tree[keys[-1]] = value


def drop_model(preset: dict[str, Any], base: dict[str, Any], assignment: str) -> None:
    """`~train.models.NAME`: the run trains every model but NAME."""
    keys = tuple(assignment[1:].strip().split("."))
    if keys[:2] != MODELS or len(keys) != 3:
        raise PipelineError(
            f"-S {assignment!r}: only a model can be removed (~train.models.NAME); "
            "set any other key with KEY=VALUE"
        )
    models = models_to_edit(preset, base)
    if keys[2] not in models:
        known = ", ".join(models) or "none"
        raise PipelineError(f"-S {assignment!r}: no model {keys[2]!r} to remove (models: {known})")
    del models[keys[2]]


def models_to_edit(preset: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    """The preset's `train.models`; a preset that keeps params.yaml's gets a copy of them."""
    if _get(preset, MODELS) is None:
        preset.setdefault("train", {})["models"] = copy.deepcopy(_get(base, MODELS) or {})
    return preset["train"]["models"]
