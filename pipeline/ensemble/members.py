"""The ensemble's members: which models it weighs, and each one's fold logits, read and averaged."""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.config.paths import TEST_LOGITS_NAME, fold_dir
from pipeline.config.schema import META_MODEL, Params
from pipeline.ensemble.cells import read_cell
from pipeline.ensemble.scoring import accuracy, average
from pipeline.io.console import PipelineError


def load_model_logits(
    model: str,
    fold_ids: list[int],
    num_rows: int,
    space: str,
    num_classes: int | None = None,
    num_test: int | None = None,
) -> tuple[np.ndarray, np.ndarray, dict[int, np.ndarray]]:
    """One model's OOF logits (all folds filled in), fold-averaged test logits, rows per fold.

    Args:
        num_classes, num_test: if given, the shape every fold's test logits must have; else
            the first fold's.
    """
    oof, test, rows_by_fold = None, [], {}
    for fold in fold_ids:
        rows, logits, fold_test = read_cell(model, fold, num_classes, num_rows)
        num_test = len(fold_test) if num_test is None else num_test
        if len(fold_test) != num_test:
            raise PipelineError(
                f"{fold_dir(model, fold) / TEST_LOGITS_NAME}: {len(fold_test)} test rows, but "
                f"the other cells have {num_test}; the cell is stale: run `dvc repro`"
            )
        if oof is None:
            oof = np.full((num_rows, logits.shape[1]), np.nan, dtype=np.float32)
        oof[rows] = logits
        rows_by_fold[fold] = rows
        test.append(fold_test)
    return oof, average(test, space), rows_by_fold


def load_models(
    folds: pd.DataFrame,
    models: list[str],
    fold_ids: list[int],
    space: str,
    num_classes: int | None = None,
) -> tuple[list[np.ndarray], list[np.ndarray], dict]:
    """Each model's OOF logits and fold-averaged test logits, and its OOF accuracy per fold."""
    targets = folds["target"].to_numpy()
    oofs, tests, per_model = [], [], {}
    num_test = None
    for model in models:
        oof, test, rows_by_fold = load_model_logits(
            model, fold_ids, len(folds), space, num_classes, num_test
        )
        num_test, num_classes = test.shape
        scored = ~np.isnan(oof).any(axis=1)
        per_model[model] = {
            "oof_accuracy": accuracy(oof[scored], targets[scored]),
            "folds": {
                str(f): accuracy(oof[rows], targets[rows]) for f, rows in rows_by_fold.items()
            },
        }
        oofs.append(oof)
        tests.append(test)
    return oofs, tests, per_model


def fold_test_logits(
    models: list[str],
    fold: int,
    space: str,
    num_classes: int | None = None,
    num_test: int | None = None,
) -> np.ndarray:
    """Fold `fold`'s test logits averaged over `models` in `space` (equal weights).

    Args:
        num_classes, num_test: if given, the shape each model's test logits must have.
    """
    tests = []
    for model in models:
        test = read_cell(model, fold, num_classes)[2]
        if num_test is not None and len(test) != num_test:
            raise PipelineError(
                f"{fold_dir(model, fold) / TEST_LOGITS_NAME}: {len(test)} rows but test.csv has "
                f"{num_test}; the cell is stale: run `dvc repro train`"
            )
        tests.append(test)
    return average(tests, space)


def ensemble_members(params: Params) -> list[str]:
    """The models the ensemble weighs: train.models, then stage meta's when meta.enabled."""
    return list(params.train.models) + ([META_MODEL] if params.meta.enabled else [])


def members_setup(params: Params) -> dict:
    """The run's key settings, which results/ensemble/metrics.json puts first (`setup`), so that
    plain `dvc exp show` opens with them beside the OOF accuracies.

    `models` joins the members with "+"; each other key is the networks' value when they all
    share it, else their values joined with "/" in train.models order.
    """
    networks = [params.train.for_model(name) for name in params.train.models]

    def shared(values: list) -> int | float | str:
        return values[0] if len(set(values)) == 1 else "/".join(f"{value:g}" for value in values)

    return {
        "models": "+".join(ensemble_members(params)),
        "image_size": shared([hp.image_size for hp in networks]),
        "epochs": shared([hp.epochs for hp in networks]),
        "lr": shared([hp.optimizer.lr for hp in networks]),
    }
