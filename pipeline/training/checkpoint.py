"""Checkpoints: the resumable end-of-epoch state, its fingerprint, and trained weights."""

from __future__ import annotations

import io
import math
import pickle
import random
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pydantic
import torch
from dvclive import Live

from pipeline.config.model_settings import ModelParams
from pipeline.config.paths import CHECKPOINT_NAME, CLASSES_FILE, FOLDS_FILE, PREPARED_TEST, fold_dir
from pipeline.io.console import PipelineError
from pipeline.io.files import file_md5, write_bytes
from pipeline.models.registry import create_cell_model
from pipeline.training import distributed
from pipeline.training.live import log_epoch


class Resumable(Protocol):
    """What `resume` restores: the engine's Trainer (its model, optimiser, schedule, EMA)."""

    device: torch.device

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def run_fingerprint(
    model: str,
    fold: int,
    hp: ModelParams,
    device: torch.device,
    *,
    seed: int,
    deterministic: bool,
    cache_size: int | None,
    augment_on: str = "workers",
) -> dict[str, Any]:
    """What one cell's training depends on: a checkpoint is resumed only if all of it matches.

    `train.loader` is left out but for where images are augmented (`augment_on`, the path
    pipeline.data.device_data took): the data stream depends on nothing else of it (see
    pipeline.data.loaders). The workers path adds no key, so its fingerprints stay as they were.

    Args:
        model: the cell's key of train.models.
        fold: the cell's validation fold.
        hp: the cell's merged settings.
        device: the resolved training device.
        seed: base.seed.
        deterministic: train.deterministic.
        cache_size: the side of stage cache's images (its manifest's); None: no cache.
        augment_on: `device` or `workers`.
    """
    return {
        "model": model,
        "fold": fold,
        "seed": seed,
        "model_params": hp.model_dump(mode="json"),
        "device": device.type,
        "world_size": distributed.world_size(),  # the steps match, the float rounding does not
        "deterministic": deterministic,
        "cache_size": cache_size,  # cached pixels differ from decoded ones
        "folds_md5": file_md5(FOLDS_FILE),
        "test_md5": file_md5(PREPARED_TEST),
        **({"augment_on": augment_on} if augment_on != "workers" else {}),
    }


def rng_states(device: torch.device) -> list[dict[str, Any]]:
    """Every process's global RNG states, in rank order: what a resumed run continues from
    (dropout draws from torch's, MixUp from numpy's). A collective under torchrun.

    Of the GPUs only each process's training device's.
    """
    return distributed.gather(
        {
            "torch": torch.get_rng_state(),
            "cuda": [torch.cuda.get_rng_state(device)] if device.type == "cuda" else [],
            "numpy": np.random.get_state(),
            "python": random.getstate(),
        }
    )


def restore_rng_states(saved: list[dict[str, Any]] | dict[str, Any], device: torch.device) -> None:
    """This process's states of `rng_states`. A checkpoint from before December 2026 holds one
    set, rank 0's, which every process then restores, as every process did then."""
    states = saved[distributed.rank()] if isinstance(saved, list) else saved
    torch.set_rng_state(states["torch"])
    if states["cuda"]:
        torch.cuda.set_rng_state(states["cuda"][0], device)
    np.random.set_state(states["numpy"])
    random.setstate(states["python"])


def save_checkpoint(path: Path, checkpoint: dict[str, Any]) -> None:
    """Write a checkpoint atomically: a kill mid-write leaves the previous one in place.

    Serialised in memory first: saved to a path, torch records the file's (random, temporary)
    name in the archive, and the same checkpoint would get a new md5 in dvc.lock every run.
    """
    write_bytes(path, serialise(checkpoint))


def serialise(checkpoint: dict[str, Any]) -> memoryview:
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    return buffer.getbuffer()


class CheckpointWriter:
    """Epoch checkpoints whose disk write overlaps the next epoch's training.

    `save` serialises the checkpoint in memory at once (a snapshot: the next step changes the
    weights), then a background thread writes it and renames it into place, atomically as
    `save_checkpoint` does: a kill at any moment leaves the previous epoch's file, and a resume
    from it is as exact as ever. A save first waits for the write before it; leaving the `with`
    block waits for the last one and raises its error, if any.
    """

    def __init__(self) -> None:
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="checkpoint")
        self.pending: Future | None = None

    def save(self, path: Path, checkpoint: dict[str, Any]) -> None:
        data = serialise(checkpoint)
        self.wait()
        self.pending = self.pool.submit(write_bytes, path, data)

    def wait(self) -> None:
        pending, self.pending = self.pending, None
        if pending is not None:
            pending.result()

    def __enter__(self) -> CheckpointWriter:
        return self

    def __exit__(self, *exc_info) -> None:
        try:
            self.wait()
        finally:
            self.pool.shutdown()


def load_resumable(path: Path, fingerprint: dict[str, Any]) -> dict[str, Any] | None:
    """The checkpoint at `path` if training can continue from it, else None (saying why).

    Args:
        path: the cell's last.pt.
        fingerprint: this run's `run_fingerprint`; the checkpoint's must be equal.
    """
    if not path.is_file():
        return None
    try:
        # Our own file; it holds numpy and python RNG states, which weights_only refuses.
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as err:
        print(f"{path}: unreadable ({err}); training from scratch")
        return None
    saved = checkpoint.get("fingerprint", {})
    changed = [key for key, value in fingerprint.items() if saved.get(key) != value]
    if changed:
        print(f"{path} is from a run with other {', '.join(changed)}; training from scratch")
        return None
    if checkpoint.get("complete"):
        print(f"{path} is from a finished run; training from scratch")
        return None
    return checkpoint


def resume(
    trainer: Resumable, live: Live, checkpoint_path: Path, fingerprint: dict[str, Any], epochs: int
) -> tuple[int, dict, list[dict[str, float]]]:
    """Restore the training state from `checkpoint_path` if it matches and is unfinished.

    Restores the model, optimiser, scheduler, scaler, EMA and RNG states, and replays the
    finished epochs' metrics into `live` (DVCLive starts a fresh folder). Under torchrun rank 0
    reads the checkpoint it wrote and sends it to the others, which need no shared disk.

    Returns:
        The number of finished epochs, the kept epoch so far and the metric history; 0, no kept
        and no history when training starts from scratch.
    """
    checkpoint = load_resumable(checkpoint_path, fingerprint) if distributed.is_main() else None
    checkpoint = distributed.broadcast(checkpoint)
    if checkpoint is None:
        return 0, {"acc": -1.0, "loss": math.inf, "epoch": 0, "weights": None, "state": None}, []
    trainer.load_state_dict(checkpoint["trainer"])
    restore_rng_states(checkpoint["rng"], trainer.device)
    for metrics in checkpoint["history"]:
        log_epoch(live, metrics)
    done, cell = checkpoint["epoch"], f"{fingerprint['model']} fold {fingerprint['fold']}"
    if done < epochs:
        print(f"resuming {cell} from epoch {done + 1}")
    else:
        print(f"resuming {cell} after its last epoch: predicting with the kept weights")
    return done, checkpoint["best"], checkpoint["history"]


def mark_complete(path: Path, fingerprint: dict[str, Any], epochs: int) -> None:
    """Shrink the checkpoint to a marker of the finished run.

    A finished run is never resumed (a new run of the stage starts over), so its weights and
    optimiser state would only take disk space.
    """
    save_checkpoint(path, {"fingerprint": fingerprint, "complete": True, "epoch": epochs})


def load_checkpoint(path: Path) -> dict:
    """A checkpoint written by stage `train`, on the CPU, without running pickled code."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a truncated or foreign file
        raise PipelineError(f"{path}: cannot load the checkpoint ({err})") from None


def retrain_error(path: Path, problem: str) -> PipelineError:
    """A checkpoint this version cannot use: what is wrong, and that retraining fixes it."""
    return PipelineError(
        f"{path}: {problem}; it was written by another version of the pipeline: retrain it "
        "with `dvc repro train` (or `dvc repro -f train` if DVC thinks it is up to date)"
    )


def trained_settings(checkpoint: dict, path: Path) -> ModelParams:
    """The settings the network of `checkpoint` (read from `path`) was trained with.

    Raises:
        PipelineError: they are missing or this version's ModelParams rejects them (retrain).
    """
    if "model_params" not in checkpoint:
        raise retrain_error(path, "the checkpoint has no model_params")
    try:
        return ModelParams.model_validate(checkpoint["model_params"])
    except pydantic.ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors()[:3]
        )
        raise retrain_error(
            path, f"its model_params do not fit this version ({problems})"
        ) from None


def load_trained(
    model_name: str,
    fold: int,
    hp: ModelParams,
    classes: list[str],
    checkpoint: dict | None = None,
) -> torch.nn.Module:
    """The network of models/<model>/fold<k>/best.pt, checked against the current classes.

    Args:
        model_name: the cell's key of train.models.
        fold: the cell's fold.
        hp: the settings to build it with (`create_cell_model`): the current ones
            (pseudo) or the checkpoint's own (`trained_settings`, predict).
        classes: the class names the network must have been trained on, in logit order.
        checkpoint: the cell's best.pt if the caller loaded it already (`load_checkpoint`).

    Raises:
        PipelineError: other classes (run `dvc repro`), or a checkpoint this version cannot
            rebuild the network from (retrain it).
    """
    path = fold_dir(model_name, fold) / CHECKPOINT_NAME
    if checkpoint is None:
        checkpoint = load_checkpoint(path)
    missing = [key for key in ("classes", "state_dict") if key not in checkpoint]
    if missing:
        raise retrain_error(path, f"the checkpoint has no {' or '.join(missing)}")
    if checkpoint["classes"] != classes:
        raise PipelineError(
            f"{path} was trained on other classes than {CLASSES_FILE} lists; run `dvc repro`"
        )
    backbone = hp.backbone or model_name
    model = create_cell_model(hp, model_name, len(classes), False)
    try:
        model.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as err:  # missing, unexpected or mis-shaped weights
        lines = [line.strip() for line in str(err).strip().splitlines()]
        detail = " ".join(lines[1:2] or lines)  # the first says only "Error(s) in loading"
        detail = detail if len(detail) <= 200 else detail[:200] + "..."
        raise retrain_error(
            path, f"its weights do not fit {backbone} as built now: {detail}"
        ) from None
    return model
