"""Stage `ensemble`: average fold logits per model and across models; score out-of-fold.

    python -m pipeline.ensemble

Reads every models/<model>/fold<k>/ listed by train.models × train.folds and writes:
- data/ensemble/: oof_logits.npy (the ensemble's out-of-fold logits, in folds.csv row order;
  NaN for rows of folds not trained) and test_logits.npy (the ensemble's test logits);
- results/ensemble/metrics.json: OOF accuracy per fold and model, per model, and for the ensemble;
- results/ensemble/confusion.csv (actual, predicted: class names, one row per scored OOF image)
  and per_class.csv (class, accuracy, count), the data of `dvc plots show`'s confusion matrix
  and per-class accuracy bars.
`ensemble.average` chooses the space: `logits` averages raw logits, `probs` averages softmax
probabilities (and stores their log).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.cli import PipelineError, run
from pipeline.config import load_params
from pipeline.data import load_table
from pipeline.files import (
    CLASSES_FILE,
    ENSEMBLE_DIR,
    ENSEMBLE_METRICS,
    FOLDS_FILE,
    OOF_NAME,
    TEST_LOGITS_NAME,
    atomic_path,
    fold_dir,
    read_json,
    write_csv,
    write_json,
)

CONFUSION_FILE = ENSEMBLE_METRICS.parent / "confusion.csv"
PER_CLASS_FILE = ENSEMBLE_METRICS.parent / "per_class.csv"


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Numerically stable log-softmax over the last axis."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def average(logits: list[np.ndarray], space: str) -> np.ndarray:
    """Mean of same-shaped logit arrays, in logit space or probability space."""
    stacked = np.stack(logits)
    if space == "probs":
        # log(mean(softmax)) as a log-sum-exp over models, so a probability that underflows in
        # every model stays a large negative number instead of log(0) = -inf.
        log_probs = log_softmax(stacked)
        top = log_probs.max(axis=0)
        return top + np.log(np.exp(log_probs - top).mean(axis=0))
    return stacked.mean(axis=0)


def accuracy(logits: np.ndarray, targets: np.ndarray) -> float:
    """Share of rows whose highest logit is the target."""
    return float((logits.argmax(axis=1) == targets).mean())


def load_model_logits(
    model: str, fold_ids: list[int], num_rows: int, space: str
) -> tuple[np.ndarray, np.ndarray, dict[int, np.ndarray]]:
    """One model's OOF logits (all folds filled in), fold-averaged test logits, rows per fold."""
    oof, test, rows_by_fold = None, [], {}
    for fold in fold_ids:
        cell = fold_dir(model, fold)
        if not (cell / OOF_NAME).is_file():
            raise PipelineError(f"{cell}: missing; run `dvc repro` to train {model} fold {fold}")
        with np.load(cell / OOF_NAME) as saved:
            rows, logits = saved["row"], saved["logits"]
        if oof is None:
            oof = np.full((num_rows, logits.shape[1]), np.nan, dtype=np.float32)
        oof[rows] = logits
        rows_by_fold[fold] = rows
        test.append(np.load(cell / TEST_LOGITS_NAME))
    return oof, average(test, space), rows_by_fold


def ensemble(
    folds: pd.DataFrame, models: list[str], fold_ids: list[int], space: str
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Return (ensemble OOF logits, ensemble test logits, metrics)."""
    targets = folds["target"].to_numpy()
    covered = np.flatnonzero(folds["fold"].isin(fold_ids).to_numpy())
    oofs, tests, per_model = [], [], {}
    for model in models:
        oof, test, rows_by_fold = load_model_logits(model, fold_ids, len(folds), space)
        per_model[model] = {
            "oof_accuracy": accuracy(oof[covered], targets[covered]),
            "folds": {
                str(f): accuracy(oof[rows], targets[rows]) for f, rows in rows_by_fold.items()
            },
        }
        oofs.append(oof)
        tests.append(test)
    oof, test = average(oofs, space), average(tests, space)
    metrics = {
        "oof_accuracy": accuracy(oof[covered], targets[covered]),
        "num_models": len(models),
        "num_folds": len(fold_ids),
        "oof_images": int(len(covered)),
        "models": per_model,
    }
    return oof, test, metrics


def confusion_rows(oof: np.ndarray, targets: np.ndarray, classes: list[str]) -> pd.DataFrame:
    """The true and predicted class name of every scored OOF image.

    Args:
        oof: ensemble OOF logits, (images, classes); rows of untrained folds are NaN.
        targets: each image's class index into `classes`.
        classes: class names, in logit order.

    Returns:
        Columns `actual` and `predicted`, one row per image with logits, in `oof` row order.
    """
    if oof.shape[1] != len(classes):
        raise PipelineError(
            f"the logits have {oof.shape[1]} classes but {CLASSES_FILE} lists {len(classes)}; "
            "run `dvc repro` to retrain on the current data"
        )
    scored = ~np.isnan(oof).any(axis=1)
    names = np.asarray(classes, dtype=object)
    return pd.DataFrame(
        {"actual": names[targets[scored]], "predicted": names[oof[scored].argmax(axis=1)]}
    )


def per_class_accuracy(confusion: pd.DataFrame, classes: list[str]) -> pd.DataFrame:
    """OOF accuracy (the share predicted right) and image count per class, in class order.

    Args:
        confusion: `confusion_rows()`'s table.
        classes: class names; a class without scored images has no accuracy and is left out.

    Returns:
        Columns `class`, `accuracy` and `count`.
    """
    right = (confusion["actual"] == confusion["predicted"]).groupby(confusion["actual"])
    table = pd.DataFrame({"accuracy": right.mean().round(6), "count": right.size()})
    table = table.reindex([name for name in classes if name in table.index])
    return table.rename_axis("class").reset_index()


def main(argv: list[str] | None = None) -> dict:
    params = load_params()
    folds = load_table(FOLDS_FILE)
    classes = read_json(CLASSES_FILE)
    models = list(params.train.models)
    oof, test, metrics = ensemble(folds, models, params.train.folds, params.ensemble.average)
    confusion = confusion_rows(oof, folds["target"].to_numpy(), classes)
    per_class = per_class_accuracy(confusion, classes)
    with atomic_path(ENSEMBLE_DIR) as out:
        out.mkdir()
        np.save(out / "oof_logits.npy", oof)
        np.save(out / "test_logits.npy", test)
    write_json(ENSEMBLE_METRICS, metrics)
    write_csv(CONFUSION_FILE, confusion)
    write_csv(PER_CLASS_FILE, per_class)
    for model, scores in metrics["models"].items():
        print(f"ensemble: {model:<24} OOF accuracy {scores['oof_accuracy']:.4f}")
    print(
        f"ensemble: {len(models)} model(s) x {len(params.train.folds)} fold(s) "
        f"OOF accuracy {metrics['oof_accuracy']:.4f} -> {ENSEMBLE_METRICS}"
    )
    worst = per_class.nsmallest(3, "accuracy", keep="first")
    print(
        "ensemble: lowest per-class accuracy "
        + ", ".join(f"{row['class']} {row['accuracy']:.2f}" for _, row in worst.iterrows())
        + f" -> {PER_CLASS_FILE}, {CONFUSION_FILE}"
    )
    return metrics


if __name__ == "__main__":
    run(main)
