"""Stage `train`: train one model on one fold, keep an epoch's weights, predict OOF and test logits.

    python -m pipeline.stages.train --model d2l_resnet11_slim --fold 0
    torchrun --nproc_per_node=4 -m pipeline.stages.train --model d2l_resnet11_slim --fold 0

dvc.yaml runs this once per (model, fold) cell of the `train` matrix. The command line carries
only those coordinates; every hyperparameter is `train.defaults` merged with
`train.models.<model>` from params.yaml. Writes, each atomically:
- models/<model>/fold<k>/: best.pt (weights, params, classes), oof.npz (row, logits),
  test_logits.npy
- results/train/<model>/fold<k>/: DVCLive per-epoch metrics (train/valid loss and accuracy, lr;
  valid_ema/ for the EMA weights) and a summary naming the kept epoch (`best_epoch`, as `keep`
  chose it) and its `best_weights`
- checkpoints/<model>/fold<k>/last.pt: everything needed to continue after the last finished
  epoch, rewritten every epoch. A run stopped at any moment (Ctrl-C, SIGKILL, a crash) resumes
  from it on the next run if it was made with the same settings and data; once the outputs are
  written it shrinks to a marker of the finished run, and the next run starts over.

With `train.deterministic: true` a resumed run is bit-identical to an uninterrupted one on CPU:
data order and augmentation are pure functions of (seed, epoch, sample), see pipeline.data.loaders.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from pipeline.config.model_settings import ModelParams
from pipeline.config.params import load_params
from pipeline.config.paths import (
    CACHE_ORIENTATION,
    CLASSES_FILE,
    FOLDS_FILE,
    PREPARED_TEST,
    last_checkpoint_path,
)
from pipeline.config.schema import Params
from pipeline.data.device_data import fold_data
from pipeline.data.loaders import fold_tables
from pipeline.data.orientation import orient_settings, read_orientation
from pipeline.data.settings import data_settings
from pipeline.data.tables import check_targets, read_class_list, read_input_table
from pipeline.ensemble.cells import save_cell
from pipeline.io.console import PipelineError, parse_stage_args, run
from pipeline.models.registry import create_cell_model
from pipeline.training import distributed
from pipeline.training.cell_trainer import create_cell_trainer
from pipeline.training.checkpoint import mark_complete, run_fingerprint
from pipeline.training.device import configure_determinism, resolve_device, seed_everything
from pipeline.training.engine import evaluate
from pipeline.training.fitting import fit_and_predict
from pipeline.training.live import open_live
from pipeline.training.running_metrics import DivergedError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="a key of train.models in params.yaml")
    parser.add_argument("--fold", required=True, type=int, help="the validation fold")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    return parse_stage_args(argv, __doc__, "python3 -m pipeline.stages.train", add_arguments)


def check_cell(params: Params, model: str, fold: int) -> ModelParams:
    """The merged settings of one matrix cell, after checking the cell exists."""
    if model not in params.train.models:
        raise PipelineError(
            f"--model {model!r} is not a key of train.models ({', '.join(params.train.models)})"
        )
    if not 0 <= fold < params.split.n_splits:
        raise PipelineError(f"--fold {fold}: allowed 0..{params.split.n_splits - 1}")
    return params.train.for_model(model)


@contextlib.contextmanager
def explain_failures(
    model: str, hp: ModelParams, checkpoint_path: Path, device: torch.device | None = None
) -> Iterator[None]:
    """Turn known training failures into errors that say what to change in params.yaml.

    They are a diverged loss, running out of GPU memory, and an operation without a
    deterministic implementation when `train.deterministic` is true. `amp: false` is advised
    only where mixed precision runs: on CUDA (`device`; None: wherever the model trains).
    """
    key = f"train.models.{model}"
    amp_on = hp.amp and (device is None or device.type == "cuda")
    try:
        yield
    except DivergedError as err:
        kept = f"; {checkpoint_path} keeps epoch {err.epoch - 1}" if err.epoch > 1 else ""
        raise PipelineError(
            f"training {model} diverged: the loss was {err.loss} at epoch {err.epoch}, step "
            f"{err.step}/{err.steps}. Lower the learning rate ({key}.optimizer.lr, now "
            f"{hp.optimizer.lr:g})" + (" or set amp: false" if amp_on else "") + kept
        ) from None
    except torch.cuda.OutOfMemoryError:  # torch.OutOfMemoryError (any device) from torch 2.5
        raise PipelineError(
            f"out of GPU memory training {model} with batch_size {hp.batch_size} at image_size "
            f"{hp.image_size}: {memory_advice(key, hp)}"
        ) from None
    except RuntimeError as err:
        if "does not have a deterministic implementation" not in str(err):
            raise
        raise PipelineError(
            f"train.deterministic is true, but {model} uses an operation without a "
            f"deterministic implementation on this device ({str(err).splitlines()[0]}); "
            "set train.deterministic: false"
        ) from None


def memory_advice(key: str, hp: ModelParams) -> str:
    """What to lower in params.yaml; at batch_size 1 only the image or the model can shrink."""
    amp = "" if hp.amp else ", or set amp: true"
    if hp.batch_size == 1:
        return f"lower {key}.image_size or choose a smaller {key}.backbone in params.yaml{amp}"
    return (
        f"lower {key}.batch_size (e.g. {hp.batch_size // 2}, with grad_accum_steps: "
        f"{2 * hp.grad_accum_steps} to keep the effective batch) or {key}.image_size in "
        f"params.yaml{amp}"
    )


def main(argv: list[str] | None = None) -> dict[str, float]:
    args = parse_args(argv)
    params = load_params()
    hp, orientation_note = orient_settings(
        check_cell(params, args.model, args.fold), read_orientation(CACHE_ORIENTATION)
    )
    seed_everything(params.base.seed)
    device = distributed.setup(resolve_device(params.train.device))  # joins torchrun's group
    configure_determinism(params.train.deterministic, device)
    checkpoint_path = last_checkpoint_path(args.model, args.fold)

    # 1. Data: this fold's split of the prepared images, plus the test set.
    classes = read_class_list(CLASSES_FILE)
    folds = read_input_table(FOLDS_FILE, ("path", "md5", "target", "fold"))
    test = read_input_table(PREPARED_TEST, ("path", "md5"))
    check_targets(folds, len(classes), FOLDS_FILE)
    train_images = int((folds["fold"] != args.fold).sum())
    distributed.check_batch_size(
        hp.batch_size, train_images, f"train.models.{args.model}", mixing=hp.mixup.enabled
    )
    data = data_settings(params, device)  # decided once: workers, memory format, the cache
    loaders, data_path, why = fold_data(hp, fold_tables(folds, test, args.fold), data)
    valid_rows = np.flatnonzero(folds["fold"].to_numpy() == args.fold)
    valid_targets = folds["target"].to_numpy()[valid_rows]

    # 2. Model, then device and memory format (the optimiser is built on the moved weights).
    model = create_cell_model(hp, args.model, len(classes), hp.pretrained)
    trainer = create_cell_trainer(
        model, hp, loaders, device, data.channels_last, params.train.compile
    )
    distributed.seed_process(params.base.seed)  # under torchrun, dropout masks per process
    fingerprint = run_fingerprint(
        args.model,
        args.fold,
        hp,
        device,
        seed=params.base.seed,
        deterministic=params.train.deterministic,
        cache_size=data.cache_size,
        augment_on=data_path,
    )
    print(
        f"train {args.model} fold {args.fold}: {loaders['train'].num_images} train / "
        f"{len(valid_rows)} valid images, {len(classes)} classes, {hp.epochs} epochs on {device}"
    )
    print(f"augmented on the {data_path}: {why}")
    if hp.grad_accum_steps > 1:
        print(
            f"gradient accumulation: {hp.grad_accum_steps} batches of {hp.batch_size} a step "
            f"(an effective batch of {hp.grad_accum_steps * hp.batch_size})"
        )
    if orientation_note:
        print(f"augment: {orientation_note}")

    # 3. Train (or resume), then predict OOF and test logits with the kept weights and TTA.
    with (
        explain_failures(args.model, hp, checkpoint_path, device),
        open_live(args.model, args.fold) as live,
    ):
        best, oof_logits, test_logits = fit_and_predict(
            trainer, loaders, hp, valid_targets, live, checkpoint_path, fingerprint
        )
        oof = evaluate(oof_logits, valid_targets, trainer.loss_fn)
        summary = {
            "best_epoch": best["epoch"],
            "best_valid_acc": best["acc"],
            "best_weights": best["weights"],  # raw, or ema when the moving average won
            "oof_acc": oof["acc"],
            "oof_loss": oof["loss"],
        }
        live.summary.update(summary)

        # 4. The cell's outputs; the DVCLive folder is renamed into place as the block ends.
        checkpoint = {
            "model": args.model,
            "backbone": hp.backbone or args.model,
            "classes": classes,
            "params": params.model_dump(mode="json"),
            "model_params": hp.model_dump(mode="json"),
            "epoch": best["epoch"],
            "weights": best["weights"],
            "state_dict": best["state"],
        }
        if distributed.is_main():
            save_cell(args.model, args.fold, checkpoint, valid_rows, oof_logits, test_logits)
    if distributed.is_main():
        mark_complete(checkpoint_path, fingerprint, hp.epochs)
    distributed.barrier()  # every process returns once the outputs are in place
    print(
        f"train {args.model} fold {args.fold}: kept epoch {best['epoch']} ({best['weights']}, "
        f"keep: {hp.keep}), OOF accuracy {oof['acc']:.4f} with TTA {hp.tta}"
    )
    return summary


if __name__ == "__main__":
    run(main)
