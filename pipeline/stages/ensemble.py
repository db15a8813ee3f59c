"""Stage `ensemble`: average fold logits per model, weight the models; score out-of-fold.

    python -m pipeline.stages.ensemble

Reads every models/<model>/fold<k>/ listed by train.models × train.folds (and models/meta/, stage
meta's classifier, when meta.enabled) and writes:
- data/ensemble/: oof_logits.npy (the ensemble's out-of-fold logits, in folds.csv row order;
  NaN for rows of folds not trained), test_logits.npy (the ensemble's test logits) and
  weights.json (each model's weight, which `leaf predict` averages its models with);
- results/ensemble/metrics.json, the project's one headline metrics file: OOF accuracy for the
  ensemble (`oof_accuracy`, with the weights chosen; with `ensemble.weights: fit`,
  `oof_accuracy_fitted_cross`, each fold scored with weights fitted on the other folds: the
  honest estimate, and `oof_accuracy_fitted`), then `setup` (the members and their image size,
  epochs and lr: `members_setup`), `oof_accuracy_equal` (all models alike), the weight of
  each model, and per model its OOF accuracy (overall and per fold) and, with two members or
  more, what it adds (`adds`): the ensemble's honest accuracy (cross-fitted with `fit`,
  equal weights otherwise) minus the same without it, and on how many images it is right
  where every other member is wrong (`right_alone`: about the most a weight on it can win).
  Its key order is the column order of `dvc exp show`, so plain `dvc exp show` opens with the
  accuracies and the setup;
- results/ensemble/confusion.csv (actual, predicted: class names, one row per scored OOF image)
  and per_class.csv (class, accuracy, count), the data of `dvc plots show`'s confusion matrix
  and per-class accuracy bars.
`ensemble.average` chooses the space: `logits` averages raw logits, `probs` averages softmax
probabilities (and stores their log). `ensemble.weights: fit` weights the models by greedy
ensemble selection on the OOF logits (`fit_weights`), scored only on the images every model
has OOF logits for; the test logits are weighted alike.
"""

from __future__ import annotations

from functools import partial

import numpy as np
import pandas as pd

from pipeline.config.params import load_params
from pipeline.config.paths import (
    CLASSES_FILE,
    CONFUSION_FILE,
    ENSEMBLE_DIR,
    ENSEMBLE_METRICS,
    ENSEMBLE_WEIGHTS,
    FOLDS_FILE,
    PER_CLASS_FILE,
)
from pipeline.data.tables import check_targets, read_class_list, read_input_table
from pipeline.ensemble.members import (
    combine_cells,
    ensemble_members,
    member_scores,
    members_setup,
    read_cells,
)
from pipeline.ensemble.scoring import (
    accuracy,
    average,
    confusion_rows,
    cross_fitted_accuracy,
    honest_accuracy,
    member_contributions,
    per_class_accuracy,
    right_alone,
)
from pipeline.io.console import parse_stage_args, run
from pipeline.io.files import atomic_path, write_csv, write_json


def ensemble(
    folds: pd.DataFrame,
    models: list[str],
    fold_ids: list[int],
    space: str,
    weighting: str = "equal",
    rounds: int = 100,
    num_classes: int | None = None,
    setup: dict | None = None,
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Return (ensemble OOF logits, ensemble test logits, metrics).

    Args:
        folds: folds.csv (target and fold per training image).
        models: keys of train.models.
        fold_ids: the trained folds.
        space: `ensemble.average`.
        weighting: `equal` weighs the models alike; `fit` uses `fit_weights`.
        rounds: `fit_weights`' most rounds.
        num_classes: if given, the number of classes every cell's logits must have.
        setup: the run's key settings (`members_setup`), written after the accuracies.
    """
    targets = folds["target"].to_numpy()
    cells = read_cells(models, fold_ids, len(folds), num_classes)
    oofs, _, oof, test, weights, scored = combine_cells(cells, targets, space, weighting, rounds)
    # The rows every model predicted: the only ones scored, and the only ones weights fit on.
    scored_oofs, scored_targets = [o[scored] for o in oofs], targets[scored]
    fold_of_row = folds["fold"].to_numpy()[scored]
    scores = {"oof_accuracy": accuracy(oof[scored], scored_targets)}
    if weighting == "fit":
        if len(np.unique(fold_of_row)) > 1:  # one fold leaves nothing to fit its weights on
            scores["oof_accuracy_fitted_cross"] = cross_fitted_accuracy(
                scored_oofs, scored_targets, fold_of_row, space, rounds
            )
        scores["oof_accuracy_fitted"] = scores["oof_accuracy"]
    equal = accuracy(average(oofs, space)[scored], scored_targets)
    per_model = member_scores(cells, oofs, targets)
    if len(models) > 1:
        honest = partial(
            honest_accuracy,
            targets=scored_targets,
            fold_of_row=fold_of_row,
            space=space,
            weighting=weighting,
            rounds=rounds,
        )
        whole = scores.get("oof_accuracy_fitted_cross", equal)
        added = member_contributions(scored_oofs, honest, whole)
        alone = right_alone(scored_oofs, scored_targets)
        for model, value, count in zip(models, added, alone, strict=True):
            per_model[model].update(adds=value, right_alone=count)
    # Key order is `dvc exp show`'s column order: the accuracies and the setup first.
    metrics = {
        **scores,
        **({"setup": setup} if setup else {}),
        "oof_accuracy_equal": equal,
        "weights": dict(zip(models, weights.tolist(), strict=True)),
        "num_models": len(models),
        "num_folds": len(fold_ids),
        "oof_images": int(scored.sum()),
        "models": per_model,
    }
    return oof, test, metrics


def honesty_note(metrics: dict, weighting: str) -> str:
    """What to trust beside the fitted weights' accuracy: their cross-fitted figure, or with one
    fold scored (nothing to cross-fit on) the equal weights' figure."""
    cross = metrics.get("oof_accuracy_fitted_cross")
    if cross is not None:
        return f"; weights fitted on the other folds: {cross:.4f}"
    if weighting == "fit" and metrics["num_models"] > 1:
        return (
            "; the weights were fitted on the one fold they are scored on: trust the equal figure"
        )
    return ""


def main(argv: list[str] | None = None) -> dict:
    parse_stage_args(argv, __doc__, "python3 -m pipeline.stages.ensemble")
    params = load_params()
    folds = read_input_table(FOLDS_FILE, ("target", "fold"))
    classes = read_class_list(CLASSES_FILE)
    check_targets(folds, len(classes), FOLDS_FILE)
    models = ensemble_members(params)
    settings = params.ensemble
    oof, test, metrics = ensemble(
        folds,
        models,
        params.train.folds,
        settings.average,
        settings.weights,
        settings.rounds,
        len(classes),
        members_setup(params),
    )
    confusion = confusion_rows(oof, folds["target"].to_numpy(), classes)
    per_class = per_class_accuracy(confusion, classes)
    with atomic_path(ENSEMBLE_DIR) as out:
        out.mkdir()
        np.save(out / "oof_logits.npy", oof)
        np.save(out / "test_logits.npy", test)
        write_json(out / ENSEMBLE_WEIGHTS.name, metrics["weights"])
    write_json(ENSEMBLE_METRICS, metrics)
    write_csv(CONFUSION_FILE, confusion)
    write_csv(PER_CLASS_FILE, per_class)
    for model, scores in metrics["models"].items():
        adds = (
            f", adds {scores['adds']:+.4f}, right alone on {scores['right_alone']} image(s)"
            if "adds" in scores
            else ""
        )
        print(
            f"ensemble: {model:<24} OOF accuracy {scores['oof_accuracy']:.4f}, "
            f"weight {metrics['weights'][model]:.3f}{adds}"
        )
    print(
        f"ensemble: {len(models)} model(s) x {len(params.train.folds)} fold(s) "
        f"OOF accuracy {metrics['oof_accuracy']:.4f} with {settings.weights} weights "
        f"(equal: {metrics['oof_accuracy_equal']:.4f}{honesty_note(metrics, settings.weights)}) "
        f"-> {ENSEMBLE_METRICS}"
    )
    picked = [name for name in params.train.models if params.train.for_model(name).keep == "best"]
    if picked:
        print(
            f"ensemble: {', '.join(picked)} kept each fold's best-validating epoch (keep: best), "
            "so their OOF figures flatter them; keep: last scores them honestly"
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
