"""The ensemble's members: which models it weighs, their cells read, and the one way cells
combine (over each model's folds, then over the models with weights)."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from pipeline.config.paths import TEST_LOGITS_NAME, fold_dir
from pipeline.config.schema import META_MODEL, Params
from pipeline.ensemble.cells import read_cell
from pipeline.ensemble.scoring import accuracy, average, weigh_models
from pipeline.io.console import PipelineError

# A cell's validation rows (of folds.csv), their OOF logits, and its test logits.
CellLogits = tuple[np.ndarray, np.ndarray, np.ndarray]
Cells = dict[tuple[str, int], CellLogits]  # (model, fold) -> the cell's logits


class Combined(NamedTuple):
    """Cells combined as stage ensemble does: over each model's folds, then over the models."""

    oofs: list[np.ndarray]  # each model's OOF logits, NaN on rows none of its folds predicted
    tests: list[np.ndarray]  # each model's test logits, averaged over its folds
    oof: np.ndarray  # the ensemble's OOF logits
    test: np.ndarray  # the ensemble's test logits
    weights: np.ndarray  # one per model
    scored: np.ndarray  # the mask of the rows every model predicted


def read_cells(
    models: list[str],
    fold_ids: list[int],
    num_rows: int,
    num_classes: int | None = None,
    num_test: int | None = None,
) -> Cells:
    """Every (model, fold) cell's logits, checked to agree in classes and test rows.

    Args:
        num_rows: folds.csv's rows, which every cell's row indices must be below.
        num_classes, num_test: if given, the shape every cell's test logits must have; else
            the first cell's.
    """
    cells = {}
    for model in models:
        for fold in fold_ids:
            rows, logits, test = read_cell(model, fold, num_classes, num_rows)
            num_classes = logits.shape[1]
            num_test = len(test) if num_test is None else num_test
            if len(test) != num_test:
                raise PipelineError(
                    f"{fold_dir(model, fold) / TEST_LOGITS_NAME}: {len(test)} test rows, but "
                    f"test.csv or the other cells have {num_test}; the cell is stale: run "
                    "`dvc repro`"
                )
            cells[model, fold] = rows, logits, test
    return cells


def model_logits(
    cells: Cells, num_rows: int, space: str
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each model's OOF logits (its folds' rows filled in, NaN elsewhere) and test logits
    (its folds' averaged alike in `space`), in the order the cells list the models."""
    oofs, tests = {}, {}
    for (model, _), (rows, logits, test) in cells.items():
        if model not in oofs:
            oofs[model] = np.full((num_rows, logits.shape[1]), np.nan, dtype=np.float32)
        oofs[model][rows] = logits
        tests.setdefault(model, []).append(test)
    return {model: (oofs[model], average(tests[model], space)) for model in oofs}


def combine_cells(
    cells: Cells,
    targets: np.ndarray,
    space: str,
    weighting: str = "equal",
    rounds: int = 100,
) -> Combined:
    """The ensemble of (model, fold) cells: folds averaged per model, then the models weighed.

    Args:
        cells: (model, fold) -> the cell's logits (`read_cells`).
        targets: folds.csv's targets; rows no fold predicted stay NaN in the OOF logits.
        space: `ensemble.average`.
        weighting: `equal` weighs the models alike; `fit` fits weights on the OOF logits.
        rounds: `fit_weights`' most rounds.
    """
    by_model = model_logits(cells, len(targets), space)
    oofs = [oof for oof, _ in by_model.values()]
    tests = [test for _, test in by_model.values()]
    oof, test, weights, scored = weigh_models(oofs, tests, targets, space, weighting, rounds)
    return Combined(oofs, tests, oof, test, weights, scored)


def member_scores(cells: Cells, oofs: list[np.ndarray], targets: np.ndarray) -> dict[str, dict]:
    """Each model's OOF accuracy on the rows it predicted, and per fold.

    Args:
        cells: the cells `oofs` were combined from (`combine_cells`).
        oofs: each model's OOF logits, in the order the cells list the models.
        targets: folds.csv's targets.
    """
    models = list(dict.fromkeys(model for model, _ in cells))
    scores = {}
    for model, oof in zip(models, oofs, strict=True):
        scored = ~np.isnan(oof).any(axis=1)
        per_fold = {
            str(fold): accuracy(oof[rows], targets[rows])
            for (name, fold), (rows, _, _) in cells.items()
            if name == model
        }
        scores[model] = {"oof_accuracy": accuracy(oof[scored], targets[scored]), "folds": per_fold}
    return scores


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
