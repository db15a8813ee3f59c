"""Pretrained weights from a local file or folder: `pretrained: <path>` (offline Kaggle notebooks).

A path names a weights file (.pth, .pt, .bin, .safetensors: a state_dict, or a dict holding one
under `state_dict` or `model`), a folder holding one (`model.safetensors`, `pytorch_model.bin`,
or a single weights file), or a Hugging Face cache (`models--timm--<name>/snapshots/<hash>/`).
Every tensor but the classifier head's is loaded; the head keeps its random init, sized for the
competition's classes. Relative paths resolve against the working directory: the project root,
where the stages run.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from pipeline.io.console import PipelineError

WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")
WEIGHT_NAMES = ("model.safetensors", "pytorch_model.bin")  # Hugging Face's, best first
HF_CACHE_MODEL = "models--"  # a cached repo's folder: models--<owner>--<name>
SHOWN_KEYS = 3  # how many mismatched keys an error lists


def weights_path(value: str | Path) -> Path:
    """The `pretrained:` path as the stages see it (`~` expanded, relative to the project root)."""
    return Path(value).expanduser()


def find_weights_file(value: str | Path, model_name: str = "") -> Path:
    """The weights file that `value` (a file, a folder or a Hugging Face cache) names.

    Args:
        value: the `pretrained:` setting.
        model_name: the backbone; picks its repo when a cache holds several models.

    Raises:
        PipelineError: nothing is there, or no single weights file can be picked.
    """
    path = weights_path(value)
    if path.is_file():
        return path
    if not path.is_dir():
        where = "" if path.is_absolute() else f" (looked at {path.resolve()})"
        raise PipelineError(
            f"pretrained weights {str(value)!r}: no such file or folder{where}; fix the path "
            "or set pretrained: false"
        )
    found = _file_in_folder(path) or _file_in_cache(path, model_name)
    if found is None:
        raise PipelineError(
            f"pretrained weights {str(value)!r}: no weights file in this folder (looked for "
            f"{' or '.join(WEIGHT_NAMES)}, a single {'/'.join(WEIGHT_SUFFIXES)} file, or a "
            f"Hugging Face cache {HF_CACHE_MODEL}<owner>--<model>/snapshots/<hash>/)"
        )
    return found


def _file_in_folder(folder: Path) -> Path | None:
    for name in WEIGHT_NAMES:
        if (folder / name).is_file():
            return folder / name
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix in WEIGHT_SUFFIXES]
    return files[0] if len(files) == 1 else None


def _file_in_cache(folder: Path, model_name: str) -> Path | None:
    """The weights of `model_name`'s repo in a Hugging Face cache at or below `folder`."""
    if folder.name.startswith(HF_CACHE_MODEL):
        repos = [folder]
    else:  # the cache root (HF_HOME/hub), or HF_HOME itself
        repos = sorted(folder.glob(f"{HF_CACHE_MODEL}*")) or sorted(
            folder.glob(f"hub/{HF_CACHE_MODEL}*")
        )
    repos = [repo for repo in repos if _snapshot_file(repo)]
    if len(repos) > 1:
        base = model_name.split(".", 1)[0]
        matching = [r for r in repos if r.name.split("--")[-1].split(".", 1)[0] == base]
        if len(matching) != 1:
            names = ", ".join(r.name for r in repos)
            raise PipelineError(
                f"pretrained weights {str(folder)!r}: the cache holds several models ({names}) "
                f"and {'none' if not matching else 'several'} of them match {model_name!r}; "
                "point pretrained: at one models--... folder"
            )
        repos = matching
    return _snapshot_file(repos[0]) if repos else None


def _snapshot_file(repo: Path) -> Path | None:
    """The weights file of the snapshot refs/main names, else of the newest snapshot."""
    snapshots = sorted((repo / "snapshots").glob("*"), key=lambda p: p.stat().st_mtime)
    main = repo / "refs" / "main"
    if main.is_file():
        named = repo / "snapshots" / main.read_text().strip()
        snapshots = [named] + [s for s in snapshots if s != named]
    else:
        snapshots.reverse()
    for snapshot in snapshots:
        found = _file_in_folder(snapshot) if snapshot.is_dir() else None
        if found is not None:
            return found
    return None


def load_state_dict(file: Path) -> dict[str, torch.Tensor]:
    """The tensors in a weights file, on the CPU.

    Raises:
        PipelineError: the file cannot be read, or holds no state_dict.
    """
    try:
        if file.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(file), device="cpu")
        else:
            state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 -- any failure to parse means the file is damaged
        reason = str(err).split(". ", 1)[0][:160]  # torch's advice on weights_only comes later
        hint = (
            ""
            if file.suffix == ".safetensors"
            else (
                "; a whole pickled model (torch.save(model)) is not accepted: save "
                "model.state_dict() instead"
            )
        )
        raise PipelineError(
            f"pretrained weights {file}: cannot be read, the file is corrupt or not a weights "
            f"file ({type(err).__name__}: {reason}){hint}"
        ) from None
    for key in ("state_dict", "model"):  # a training checkpoint that holds the weights
        if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
            state = state[key]
    if not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise PipelineError(
            f"pretrained weights {file}: holds no state_dict (a mapping of names to tensors, "
            "or one under 'state_dict' or 'model')"
        )
    if all(key.startswith("module.") for key in state):  # saved from DistributedDataParallel
        state = {key.removeprefix("module."): value for key, value in state.items()}
    return dict(state)


def load_weights(model: nn.Module, file: Path, head: nn.Module, model_name: str) -> str:
    """Load every tensor of `file` into `model` except the classifier `head`'s.

    Args:
        model: the freshly built network, its head sized for the competition.
        file: a weights file (see `find_weights_file`).
        head: `model`'s classifier module, left at its random init.
        model_name: the backbone, named in errors.

    Returns:
        One line saying what was loaded.

    Raises:
        PipelineError: the file is unreadable, or made for another architecture.
    """
    prefix = next(name for name, module in model.named_modules() if module is head) + "."
    own = {k: v for k, v in model.state_dict().items() if not k.startswith(prefix)}
    given = {k: v for k, v in load_state_dict(file).items() if not k.startswith(prefix)}
    problems = _mismatches(own, given)
    if problems:
        raise PipelineError(
            f"pretrained weights {file} do not fit {model_name} (made for another "
            f"architecture?): {'; '.join(problems)}"
        )
    model.load_state_dict(given, strict=False)
    out = getattr(head, "out_features", None) or _last_linear_outputs(head)
    return (
        f"pretrained: loaded {len(given)} tensors from {file}; head {prefix[:-1]!r} "
        f"left at random init for {out} classes"
    )


def _mismatches(own: dict[str, torch.Tensor], given: dict[str, torch.Tensor]) -> list[str]:
    """What keeps `given` from loading into `own`: missing, unexpected and reshaped tensors."""
    optional = ("num_batches_tracked",)  # old BatchNorm checkpoints lack the counter
    groups = {
        "missing from the file": [k for k in own if k not in given and not k.endswith(optional)],
        "in the file but not the model": [
            k for k in given if k not in own and not k.endswith(optional)
        ],
        "with another shape": [
            f"{k} {tuple(given[k].shape)} in the file vs {tuple(own[k].shape)} in the model"
            for k in own
            if k in given and given[k].shape != own[k].shape
        ],
    }
    return [
        f"{len(keys)} tensor(s) {what} ("
        + ", ".join(keys[:SHOWN_KEYS])
        + (", ...)" if len(keys) > SHOWN_KEYS else ")")
        for what, keys in groups.items()
        if keys
    ]


def _last_linear_outputs(head: nn.Module) -> int | None:
    linears = [m for m in head.modules() if isinstance(m, nn.Linear)]
    return linears[-1].out_features if linears else None
