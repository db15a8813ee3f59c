"""The training loop: resume, epochs, the kept epoch, a checkpoint after each; then prediction.

`fit_and_predict` is the one fit-then-predict sequence, run by stage train for a cell and by
stage pseudo for each fine-tuned cell.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

import numpy as np
from dvclive import Live

from pipeline.config.model_settings import ModelParams
from pipeline.training import distributed
from pipeline.training.checkpoint import CheckpointWriter, resume, rng_states
from pipeline.training.engine import Trainer, run_epoch
from pipeline.training.live import log_epoch
from pipeline.training.tta import predict_gathered


def epoch_best(metrics: dict[str, float]) -> tuple[str, float, float]:
    """This epoch's better weights, `raw` or `ema`, with their validation accuracy and loss.

    Accuracy decides; a tie goes to the lower loss, then to the raw weights.
    """
    candidates = [("raw", metrics["valid/acc"], metrics["valid/loss"])]
    if "valid_ema/acc" in metrics:
        candidates.append(("ema", metrics["valid_ema/acc"], metrics["valid_ema/loss"]))
    return max(candidates, key=lambda candidate: (candidate[1], -candidate[2]))


def epoch_last(metrics: dict[str, float]) -> tuple[str, float, float]:
    """This epoch's weights as `keep: last` takes them: the moving average's when there is one.

    The validation fold plays no part in the choice, so the OOF predictions stay unbiased.
    """
    if "valid_ema/acc" in metrics:
        return "ema", metrics["valid_ema/acc"], metrics["valid_ema/loss"]
    return "raw", metrics["valid/acc"], metrics["valid/loss"]


def kept_weights(
    metrics: dict[str, float], best: dict, keep: str
) -> tuple[str, float, float] | None:
    """The weights of this epoch to keep instead of `best`'s, with their validation accuracy and
    loss; None to keep `best`'s.

    keep `last` takes every epoch's, so the final one stands; `best` takes an epoch's better
    weights when their accuracy (then lower loss) beats the best so far.
    """
    if keep == "last":
        return epoch_last(metrics)
    weights, acc, loss = epoch_best(metrics)
    return (weights, acc, loss) if (acc, -loss) > (best["acc"], -best["loss"]) else None


def describe_epoch(metrics: dict[str, float]) -> str:
    ema = f" (ema {metrics['valid_ema/acc']:.4f})" if "valid_ema/acc" in metrics else ""
    return (
        f"train loss {metrics['train/loss']:.4f} acc {metrics['train/acc']:.4f} | valid loss "
        f"{metrics['valid/loss']:.4f} acc {metrics['valid/acc']:.4f}{ema} | lr "
        f"{metrics['lr']:.2e}"
    )


def fit_epoch(
    trainer: Trainer,
    loaders: dict,
    hp: ModelParams,
    valid_targets: np.ndarray,
    live: Live,
    epoch: int,
    best: dict,
    history: list[dict[str, float]],
) -> dict:
    """Train and validate epoch `epoch`, log it (appending to `history`); the kept weights so
    far."""
    start = time.perf_counter()
    metrics = run_epoch(trainer, loaders, valid_targets, epoch, hp.epochs)
    log_epoch(live, metrics)
    history.append(metrics)
    kept = kept_weights(metrics, best, hp.keep)
    if kept:
        weights, acc, loss = kept
        model = trainer.ema.module if weights == "ema" else trainer.model
        state = copy.deepcopy(model.state_dict())
        best = {"acc": acc, "loss": loss, "epoch": epoch, "weights": weights, "state": state}
    seconds = time.perf_counter() - start
    marker = ""
    if kept and hp.keep == "best":  # mark the new best; under `last` every epoch would be marked
        marker = "  *" + (" ema" if kept[0] == "ema" else "")
    print(f"epoch {epoch:>3}/{hp.epochs}  {describe_epoch(metrics)} | {seconds:.1f}s{marker}")
    return best


def fit_and_predict(
    trainer: Trainer,
    loaders: dict,
    hp: ModelParams,
    valid_targets: np.ndarray,
    live: Live,
    checkpoint_path: Path,
    fingerprint: dict[str, Any],
) -> tuple[dict, np.ndarray, np.ndarray]:
    """The training loop, then the kept weights' OOF and test logits with the model's TTA views.

    The loop resumes from `checkpoint_path` and saves it after every epoch (the write
    overlapping the next epoch, see CheckpointWriter). `hp.keep` says which weights are kept:
    `last`, the final epoch's (its moving average's with `ema.enabled`); `best`, the epoch with
    the highest validation accuracy (then the lowest loss) of the raw weights or their moving
    average, whichever validates better.

    Returns:
        The kept epoch's validation accuracy (`acc`) and loss (`loss`), number (`epoch`),
        which weights they are (`weights`: `raw` or `ema`) and those weights (`state`); and the
        logits of the validation and test loaders' images in their order (every process gets
        all of them under torchrun).
    """
    done, best, history = resume(trainer, live, checkpoint_path, fingerprint, hp.epochs)
    with CheckpointWriter() as writer:
        for epoch in range(done + 1, hp.epochs + 1):
            best = fit_epoch(trainer, loaders, hp, valid_targets, live, epoch, best, history)
            rng = rng_states(trainer.device)  # each process's own draws
            if distributed.is_main():  # every process holds the same weights: rank 0 saves them
                writer.save(
                    checkpoint_path,
                    {
                        "fingerprint": fingerprint,
                        "complete": False,
                        "epoch": epoch,
                        "best": best,
                        "history": history,
                        "trainer": trainer.state_dict(),
                        "rng": rng,
                    },
                )
    model, autocast = trainer.model, trainer.autocast
    model.load_state_dict(best["state"])
    oof = predict_gathered(model, loaders["valid"], autocast, hp.tta, "OOF (TTA)")
    test = predict_gathered(model, loaders["test"], autocast, hp.tta, "test (TTA)")
    return best, oof, test
