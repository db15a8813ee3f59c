"""Stage `meta`: a logistic regression on each image's size, outline and colour statistics.

    python -m pipeline.meta

Every network sees its images fitted to one square, so it cannot tell a leaf scanned at
1,700 px from one scanned at 150 px, nor read the outline's length in original pixels. Where
images vary in size those numbers carry much of the class (on leaf-silhouettes a logistic
regression on them alone scores 0.784 OOF, the network 0.766, the two together 0.902). This
stage measures them once per image on its original pixels and fits one multinomial logistic
regression per fold, on the folds the networks train on, writing models/meta/fold<k>/ (oof.npz
and test_logits.npy, as stage train does) so stage `ensemble` weighs it as one more model.

Feature groups (`meta.features`), on the decoded file at full resolution:
- size: log width, log height, log aspect ratio (width / height);
- shape: the object is the pixels whose grey level differs from the median of the image's
  border by more than a quarter of the range: log of its area, its share of the image, log of
  its outline length (pixel edges between object and background), outline / sqrt(area), and
  five descriptors of its largest outer contour (`contour_features`: solidity, length against
  the convex hull's, elongation, roughness, corner count);
- colour: mean and standard deviation of each RGB channel over the whole image.
Features are standardised on each fold's training rows; `meta.C` is the inverse L2 strength.
The table of features is kept as models/meta/features.csv. With `meta.enabled: false` the
stage writes an empty models/meta and a metrics file that says so, and the ensemble leaves it
out.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import pandas as pd
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from pipeline.cli import progress, run
from pipeline.config import META_MODEL, MetaParams, load_params
from pipeline.data import load_image, load_table
from pipeline.ensemble import accuracy
from pipeline.files import (
    CLASSES_FILE,
    FOLDS_FILE,
    META_METRICS,
    MODELS_DIR,
    OOF_NAME,
    PREPARED_TEST,
    TEST_LOGITS_NAME,
    atomic_path,
    read_json,
    remove_stale_temps,
    write_csv,
    write_json,
)

META_DIR = MODELS_DIR / META_MODEL
FEATURES_NAME = "features.csv"
# An object pixel differs from the background by more than this share of the grey range.
OBJECT_CONTRAST = 0.25
CONTOUR_FEATURES = (
    "solidity",
    "log_hull_perimeter_ratio",
    "log_elongation",
    "log_roughness",
    "polygon_vertices",
)
# The log-probability of a class a fold's training rows do not contain.
ABSENT_CLASS_LOG_PROB = math.log(1e-6)


def size_features(height: int, width: int) -> dict[str, float]:
    return {
        "log_width": math.log(width),
        "log_height": math.log(height),
        "log_aspect": math.log(width / height),
    }


def object_mask(grey: np.ndarray) -> np.ndarray:
    """The pixels that differ from the border's median grey by more than OBJECT_CONTRAST."""
    border = np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])
    return np.abs(grey - np.median(border)) > OBJECT_CONTRAST * 255


def shape_features(grey: np.ndarray) -> dict[str, float]:
    """Area and outline length of the object in original pixels, and its outline's form."""
    mask = object_mask(grey)
    area = int(mask.sum())
    outline = int((mask[1:] != mask[:-1]).sum() + (mask[:, 1:] != mask[:, :-1]).sum())
    return {
        "log_object_area": math.log1p(area),
        "object_share": area / mask.size,
        "log_outline": math.log1p(outline),
        "outline_per_sqrt_area": outline / math.sqrt(area + 1),
        **contour_features(mask),
    }


def contour_features(mask: np.ndarray) -> dict[str, float]:
    """Scale-free descriptors of the largest object's outer contour (zeros without an object).

    solidity: area over its convex hull's (lobes and notches lower it); log_hull_perimeter_ratio:
    how much longer the contour is than its hull; log_elongation: log of the ratio of the second
    moments' principal axes; log_roughness: how much longer the contour is than its polygon
    simplified to 1 % of its length (teeth and serrations); polygon_vertices: that polygon's
    corner count.
    """
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    if not contours:
        return dict.fromkeys(CONTOUR_FEATURES, 0.0)
    contour = max(contours, key=cv2.contourArea)
    hull = cv2.convexHull(contour)
    perimeter = cv2.arcLength(contour, True)
    polygon = cv2.approxPolyDP(contour, 0.01 * perimeter, True)
    moments = cv2.moments(contour)
    spread = np.array([[moments["mu20"], moments["mu11"]], [moments["mu11"], moments["mu02"]]])
    minor, major = np.linalg.eigvalsh(spread)
    return {
        "solidity": cv2.contourArea(contour) / max(cv2.contourArea(hull), 1.0),
        "log_hull_perimeter_ratio": math.log(
            max(perimeter, 1.0) / max(cv2.arcLength(hull, True), 1.0)
        ),
        "log_elongation": math.log((major + 1.0) / (minor + 1.0)),
        "log_roughness": math.log(max(perimeter, 1.0) / max(cv2.arcLength(polygon, True), 1.0)),
        "polygon_vertices": float(len(polygon)),
    }


def colour_features(rgb: np.ndarray) -> dict[str, float]:
    pixels = rgb.reshape(-1, 3) / 255
    means, stds = pixels.mean(axis=0), pixels.std(axis=0)
    return {
        **{f"mean_{channel}": float(value) for channel, value in zip("rgb", means, strict=True)},
        **{f"std_{channel}": float(value) for channel, value in zip("rgb", stds, strict=True)},
    }


def image_features(path: str, groups: list[str]) -> dict[str, float]:
    """The `groups` of features of one image file, at its full resolution."""
    rgb = load_image(path)
    features = {}
    if "size" in groups:
        features |= size_features(*rgb.shape[:2])
    if "shape" in groups:
        features |= shape_features(rgb.mean(axis=2))
    if "colour" in groups:
        features |= colour_features(rgb)
    return features


def feature_table(paths: pd.Series, groups: list[str]) -> pd.DataFrame:
    """One row of features per path, decoded in threads (PIL releases the GIL)."""
    with ThreadPoolExecutor(os.cpu_count()) as pool:
        rows = pool.map(lambda path: image_features(path, groups), paths)
        rows = list(progress(rows, total=len(paths), desc="meta", unit="img"))
    return pd.DataFrame(rows)


def fit_fold(
    train_x: np.ndarray, train_y: np.ndarray, C: float, num_classes: int
) -> Callable[[np.ndarray], np.ndarray]:
    """A logistic regression on standardised features; returns rows -> (N, classes) log-probs."""
    model = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=5000))
    with warnings.catch_warnings():
        # lbfgs stops at max_iter on nearly separable folds; its solution is still usable.
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(train_x, train_y)

    def log_probs(x: np.ndarray) -> np.ndarray:
        out = np.full((len(x), num_classes), ABSENT_CLASS_LOG_PROB, dtype=np.float32)
        out[:, model.classes_] = np.maximum(model.predict_log_proba(x), ABSENT_CLASS_LOG_PROB)
        return out

    return log_probs


def fit_folds(
    features: pd.DataFrame,
    folds: pd.DataFrame,
    test_features: pd.DataFrame,
    fold_ids: list[int],
    params: MetaParams,
    num_classes: int,
) -> dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """fold -> (its validation rows, their OOF log-probs, the test log-probs)."""
    x, test_x = features.to_numpy(np.float64), test_features.to_numpy(np.float64)
    targets, fold_of_row = folds["target"].to_numpy(), folds["fold"].to_numpy()
    cells = {}
    for fold in fold_ids:
        rows = np.flatnonzero(fold_of_row == fold)
        training = fold_of_row != fold
        predict = fit_fold(x[training], targets[training], params.C, num_classes)
        cells[fold] = (rows, predict(x[rows]), predict(test_x))
    return cells


def write_cells(cells: dict, table: pd.DataFrame) -> None:
    """models/meta/: features.csv and fold<k>/ in stage train's format, in one rename."""
    with atomic_path(META_DIR) as out:
        out.mkdir()
        write_csv(out / FEATURES_NAME, table)
        for fold, (rows, oof, test) in cells.items():
            cell = out / f"fold{fold}"
            cell.mkdir()
            np.savez(cell / OOF_NAME, row=rows, logits=oof)
            np.save(cell / TEST_LOGITS_NAME, test)


def main(argv: list[str] | None = None) -> dict:
    params = load_params()
    settings = params.meta
    remove_stale_temps(META_DIR)
    if not settings.enabled:
        with atomic_path(META_DIR) as out:
            out.mkdir()
        write_json(META_METRICS, {"enabled": False})
        print("meta: off (meta.enabled: false); the ensemble uses the networks only")
        return {"enabled": False}
    folds, test = load_table(FOLDS_FILE), load_table(PREPARED_TEST)
    groups = settings.features
    print(f"meta: measuring {', '.join(groups)} features of {len(folds) + len(test)} images")
    features = feature_table(folds["path"], groups)
    test_features = feature_table(test["path"], groups)
    num_classes = len(read_json(CLASSES_FILE))
    cells = fit_folds(features, folds, test_features, params.train.folds, settings, num_classes)
    targets = folds["target"].to_numpy()
    per_fold = {str(f): accuracy(oof, targets[rows]) for f, (rows, oof, _) in cells.items()}
    scored = np.concatenate([rows for rows, _, _ in cells.values()])
    oof = np.concatenate([oof for _, oof, _ in cells.values()])
    metrics = {
        "enabled": True,
        "oof_accuracy": accuracy(oof, targets[scored]),
        "folds": per_fold,
        "features": list(features.columns),
    }
    table = pd.concat(
        [
            pd.DataFrame({"split": "train", "image": folds["image"]}).join(features),
            pd.DataFrame({"split": "test", "image": test["image"]}).join(test_features),
        ],
        ignore_index=True,
    )
    write_cells(cells, table)
    write_json(META_METRICS, metrics)
    print(
        f"meta: logistic regression on {len(features.columns)} features, OOF accuracy "
        f"{metrics['oof_accuracy']:.4f} over {len(cells)} fold(s) -> {META_DIR}, {META_METRICS}"
    )
    return metrics


if __name__ == "__main__":
    run(main)
