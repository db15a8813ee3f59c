"""Stage meta alone, per set of feature groups and classifier: repeated stratified 5-fold CV.

    python benchmarks/meta_ablation.py ../shared/datasets/leaf-silhouettes
    python benchmarks/meta_ablation.py data/synthetic --seeds 0 1 --classifiers lda auto

The rows of BENCHMARKS.md's stage-meta tables (issue #23). Measures every labelled image of a
competition folder (train.csv: image, label) once with stage meta's own code
(`feature_table`), then, per variant and classifier, fits and scores stage meta's classifier
(`fit_fold`: standardised features, `auto` weighing lda and logistic inside the training rows)
over 5-fold splits repeated with each seed. Prints a table and, last, one JSON line of the
mean accuracies. Nothing of the project's data or outputs is touched.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedKFold

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.config.schema import MetaParams  # noqa: E402
from pipeline.ensemble.features import feature_table, image_features  # noqa: E402
from pipeline.ensemble.meta_model import fit_fold  # noqa: E402

LAST_ROUND = ["size", "shape", "outline", "disc"]
VARIANTS = {
    "size, shape, outline, disc": LAST_ROUND,
    "+ turn_pairs": [*LAST_ROUND, "turn_pairs"],
    "+ rings": [*LAST_ROUND, "rings"],
    "+ turn_pairs + rings": [*LAST_ROUND, "turn_pairs", "rings"],
    "+ turn_pairs + rings + blade": [*LAST_ROUND, "turn_pairs", "rings", "blade"],
    "+ turn_pairs + rings + blade + widths (the default)": [
        *LAST_ROUND,
        "turn_pairs",
        "rings",
        "blade",
        "widths",
    ],
}


def labelled_features(root: Path) -> tuple[pd.DataFrame, dict[str, list[str]], np.ndarray]:
    """Every group's features of train.csv's images (each image decoded once), each group's
    columns (read off the first image), and the labels as class indices."""
    table = pd.read_csv(root / "train.csv")
    paths = table["image"].map(lambda image: str(root / image))
    groups = sorted({group for groups in VARIANTS.values() for group in groups})
    columns = {group: list(image_features(paths.iloc[0], [group])) for group in groups}
    return feature_table(paths, groups), columns, pd.factorize(table["label"])[0]


def cv_accuracy(x: pd.DataFrame, y: np.ndarray, classifier: str, seed: int) -> tuple[float, list]:
    settings = MetaParams(features=["size"], classifier=classifier)  # groups only label the model
    hits, chosen = 0, []
    for train, valid in StratifiedKFold(5, shuffle=True, random_state=seed).split(x, y):
        model = fit_fold(x.iloc[train], y[train], settings, int(y.max()) + 1)
        hits += int((model.log_probs(x.iloc[valid]).argmax(axis=1) == y[valid]).sum())
        chosen.append(model.classifier)
    return hits / len(y), chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="a competition folder holding train.csv")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--classifiers", nargs="+", default=["lda", "logistic", "auto"])
    args = parser.parse_args()
    features, columns, y = labelled_features(args.root)
    results = {}
    for variant, groups in VARIANTS.items():
        x = features[[column for group in groups for column in columns[group]]]
        for classifier in args.classifiers:
            start = time.time()
            runs = [cv_accuracy(x, y, classifier, seed) for seed in args.seeds]
            mean = float(np.mean([accuracy for accuracy, _ in runs]))
            chosen = Counter(name for _, names in runs for name in names)
            results[f"{variant} | {classifier}"] = round(mean, 4)
            print(
                f"{variant:52s} {classifier:8s} {x.shape[1]:4d} features  {mean:.4f}  "
                f"({time.time() - start:.0f} s; folds: "
                f"{', '.join(f'{name} x{count}' for name, count in chosen.most_common())})",
                flush=True,
            )
    print(json.dumps({"root": str(args.root), "seeds": args.seeds, "accuracy": results}))


if __name__ == "__main__":
    main()
