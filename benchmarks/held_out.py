"""Score a run on labelled images it never saw: a held-out split of a labelled set, or the
embedded synthetic set's test images, whose labels the generator knows.

    # hold out 2 labelled images of each class (seeded) in a competition folder of its own
    python benchmarks/held_out.py split ../shared/datasets/leaf-silhouettes scratch/sil0 --seed 0
    python3 -m pipeline.tools.presets leaf-silhouettes -S data.root=scratch/sil0
    python benchmarks/held_out.py score scratch/sil0/answers.csv

    # the synthetic set of params.yaml's `generate` settings (dvc exp run -S generate.seed=1)
    python benchmarks/held_out.py synthetic scratch/synthetic1.csv
    python benchmarks/held_out.py score scratch/synthetic1.csv

The held-out rows of BENCHMARKS.md (issue #23): the cross-fitted OOF accuracy says how a run
does on its own training rows; these say how its submission does on rows it never saw.
`split` writes train.csv (the rest), test.csv (the held-out images) and answers.csv (their
labels) and links every other entry of the source folder (images/) into the new one. `score`
runs in the project folder after the run: it prints each member's accuracy on the held-out
images (its fold models averaged by stage ensemble's own code), the submission's, and the
run's OOF figures, then one JSON line. Nothing of the project's data or outputs is touched.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.config.params import load_params  # noqa: E402
from pipeline.config.paths import (  # noqa: E402
    CLASSES_FILE,
    ENSEMBLE_METRICS,
    FOLDS_FILE,
    SUBMISSION_FILE,
)
from pipeline.data.synthetic import make_species, plan_images  # noqa: E402
from pipeline.ensemble.members import ensemble_members, model_logits, read_cells  # noqa: E402

ANSWERS_NAME = "answers.csv"


def split_labelled(source: Path, out: Path, per_class: int, seed: int) -> tuple[int, int]:
    """Hold out `per_class` labelled images of each class of `source` as `out`'s test set.

    Returns:
        The numbers of training and held-out rows.
    """
    data = load_params().data
    train = pd.read_csv(source / data.train_csv)
    counts = train[data.label_col].value_counts()
    if counts.min() <= per_class:
        sys.exit(
            f"error: class {counts.idxmin()!r} has {counts.min()} labelled images; holding out "
            f"{per_class} would leave none to train on (lower --per-class)"
        )
    held = train.groupby(data.label_col).sample(per_class, random_state=seed)
    out.mkdir(parents=True, exist_ok=True)
    for entry in source.iterdir():
        link = out / entry.name
        if entry.suffix != ".csv" and not link.exists():
            link.symlink_to(entry.resolve())
    train.drop(held.index).to_csv(out / data.train_csv, index=False)
    held[[data.image_col]].to_csv(out / data.test_csv, index=False)
    held[[data.image_col, data.label_col]].to_csv(out / ANSWERS_NAME, index=False)
    return len(train) - len(held), len(held)


def synthetic_answers(out: Path) -> int:
    """The labels of the synthetic set's test images, from params.yaml's `generate` settings."""
    settings = load_params().generate
    plan = plan_images(make_species(settings), settings)
    test = plan[plan["split"] == "test"][["image", "label"]]
    out.parent.mkdir(parents=True, exist_ok=True)
    test.to_csv(out, index=False)
    return len(test)


def held_out_scores(answers: pd.DataFrame) -> dict:
    """The run's accuracy on the held-out images: each member's and the submission's."""
    params = load_params()
    image_col, label_col = params.data.image_col, params.data.label_col
    truth = answers.set_index(image_col)[label_col]
    submission = pd.read_csv(SUBMISSION_FILE)
    missing = set(truth.index) - set(submission[image_col])
    if missing:
        sys.exit(
            f"error: {SUBMISSION_FILE} lacks {len(missing)} held-out image(s), e.g. "
            f"{sorted(missing)[0]}; score the run made on the held-out split"
        )
    scored = submission[image_col].isin(truth.index).to_numpy()
    expected = truth.loc[submission[image_col][scored]].to_numpy()
    classes = np.array(json.loads(CLASSES_FILE.read_text()))
    num_rows = len(pd.read_csv(FOLDS_FILE))
    cells = read_cells(ensemble_members(params), params.train.folds, num_rows)
    scores = {}
    for model, (_, test) in model_logits(cells, num_rows, params.ensemble.average).items():
        predicted = classes[test[scored].argmax(axis=1)]
        scores[model] = float((predicted == expected).mean())
    scores["submission"] = float((submission[label_col][scored].to_numpy() == expected).mean())
    return scores


def score(answers_file: Path) -> None:
    answers = pd.read_csv(answers_file)
    held_out = held_out_scores(answers)
    metrics = json.loads(ENSEMBLE_METRICS.read_text())
    print(f"{len(answers)} held-out images ({answers_file})")
    print(f"{'member':<24} {'held out':>9} {'OOF':>7}")
    for name, accuracy in held_out.items():
        oof = metrics["models"].get(name, {}).get("oof_accuracy", metrics["oof_accuracy"])
        print(f"{name:<24} {accuracy:>9.4f} {oof:>7.4f}")
    print(f"OOF cross-fitted: {metrics.get('oof_accuracy_fitted_cross')}")
    summary = {
        "answers": str(answers_file),
        "held_out": {name: round(value, 4) for name, value in held_out.items()},
        "oof": {name: round(m["oof_accuracy"], 4) for name, m in metrics["models"].items()},
        "oof_accuracy": metrics["oof_accuracy"],
        "oof_accuracy_fitted_cross": metrics.get("oof_accuracy_fitted_cross"),
        "weights": metrics.get("weights"),
    }
    print(json.dumps(summary))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    split = commands.add_parser("split", help="hold out labelled images as a test set")
    split.add_argument("source", type=Path, help="a competition folder (train.csv, images/)")
    split.add_argument("out", type=Path, help="the new competition folder")
    split.add_argument("--per-class", type=int, default=2, help="images held out per class")
    split.add_argument("--seed", type=int, default=0)
    synthetic = commands.add_parser("synthetic", help="the synthetic test images' labels")
    synthetic.add_argument("out", type=Path, help="the answers CSV to write")
    scorer = commands.add_parser("score", help="score this folder's run on held-out labels")
    scorer.add_argument("answers", type=Path, help="an answers CSV (image, label)")
    args = parser.parse_args()
    if args.command == "split":
        n_train, n_held = split_labelled(args.source, args.out, args.per_class, args.seed)
        print(f"{args.out}: {n_train} training rows, {n_held} held out ({ANSWERS_NAME})")
    elif args.command == "synthetic":
        print(f"{args.out}: the labels of {synthetic_answers(args.out)} synthetic test images")
    else:
        score(args.answers)


if __name__ == "__main__":
    main()
