"""Stage `meta`: a classifier on each image's size, outline, area and blade statistics.

    python -m pipeline.stages.meta

Every network sees its images fitted to one square, so it cannot tell a leaf scanned at
1,700 px from one scanned at 150 px, and at 64 px a leaf's margin teeth are gone. Size and
outline, measured on the original pixels, carry much of the class (on leaf-silhouettes this
stage alone scores 0.97 OOF, the default network 0.57: BENCHMARKS.md). This stage measures
them once per image on its original pixels and fits one classifier per fold, on the
folds the networks train on (pipeline.ensemble.meta_model), writing
models/meta/fold<k>/ (oof.npz and test_logits.npy, as stage train does, so stage `ensemble`
weighs it as one more model). Each fold's OOF predictions come from its own classifier; the
test images are predicted by one more, fitted on every labelled row (with a few images a class,
a quarter more rows is worth having: BENCHMARKS.md), saved as models/meta/model.pkl and
model.json so that pipeline.tools.predict applies it to new images.

Feature groups (`meta.features`), on the decoded file at full resolution:
- size: log width, log height, log aspect ratio (width / height);
- shape: the object is the pixels that differ from the background (the plane of colour fitted
  to the image's border, robust to a leaf running off the frame) by more than a quarter of the
  range in some channel, or by less where Otsu's threshold of those differences is lower (a
  leaf of low contrast to its card; never below what the border's own pixels reach,
  `contours.object_mask`): log of its area, its share of the image,
  log of its outline length (pixel edges between object and background), outline / sqrt(area),
  and five descriptors of its largest outer contour (`contour_features`: solidity, length
  against the convex hull's, elongation, roughness, corner count);
- outline: the same object's outer contour resampled at 512 points; at six scales (1/512 to
  1/16 of its length) a histogram of the turning angle between neighbouring chords, with the
  angles' spread and mean magnitude (`outline_features`): margin teeth, lobes and tips, free of
  the leaf's position, size and turn;
- turn_pairs: per pair of those scales (fine, coarse), a joint histogram of the two turning
  angles at each point (`turn_pair_features`): a tooth on a tip, or on a straight margin;
- disc: the object mask resized so that the square root of the leaf's area is 128 px; at four
  radii (5 % to 40 % of that length) a histogram of the share of a disc centred on each of 256
  outline points that lies inside the leaf, with the shares' spread and mean (`disc_features`,
  the integral area invariant): teeth, tips and notches, free of the scan's resolution and of
  how finely the outline is traced;
- widths: on the disc group's canvas, at 14 radii (1 % to 40 % of that length, in equal
  ratios) the share of the leaf's area that a morphological opening by a disc of that radius
  removes (`width_features`, a granulometry): how much of the leaf lies in parts narrower than
  the disc (a petiole, teeth, bristle tips, slender lobes), free of position, resolution and
  turn;
- rings: ten rings round the object's centre of area, out to twice the square root of its area;
  per ring, the magnitudes of the first eight angular harmonics of how the object fills it
  (`ring_features`): its global form, free of position, resolution and turn;
- blade: inside the leaf, away from its outline and at the disc group's scale, the local form
  of the grey surface at three smoothing scales (the share of flat pixels, a histogram of the
  others' shape index: valleys such as dark veins, ridges, pits, domes, saddles; the mean
  curvedness) and the blade's CIELAB means and deviations (`blade_features`): veins and colour,
  free of position, resolution and turn; constant on silhouettes;
- colour: mean and standard deviation of each RGB channel over the whole image.
Features are standardised on each fold's training rows, and a row scored is first clipped to
the range those span. `meta.classifier`: logistic (a multinomial logistic regression, `meta.C`
its inverse L2 strength), lda (discriminant analysis with a shrunk shared covariance: often
better with a few images a class; pipeline.ensemble.discriminant) or auto, the average of
both's probabilities, LDA's weight (0, 0.25, ..., 1) chosen per fold by a cross-validation
inside that fold's training rows; the same cross-validation chooses LDA's shrinkage
(Ledoit-Wolf's or a fixed one), each class's share of its own covariance (0, LDA's linear
boundaries, to 0.2: a species that varies in its own way) and whether each feature group weighs
alike (after standardising, each column scaled by 1 / sqrt(its group's columns): the 3 of
size count as much as the 108 of turn_pairs), pipeline.ensemble.meta_choice.
The table of features is kept as models/meta/features.csv. With `meta.enabled: false` the
stage writes an empty models/meta and a metrics file that says so, and the ensemble leaves it
out.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.config.params import load_params
from pipeline.config.paths import CLASSES_FILE, FOLDS_FILE, META_DIR, META_METRICS, PREPARED_TEST
from pipeline.data.tables import check_targets, read_class_list, read_input_table
from pipeline.ensemble.cells import write_cells
from pipeline.ensemble.features import feature_table
from pipeline.ensemble.meta_model import fit_all_rows, fit_models, fold_logits
from pipeline.ensemble.scoring import accuracy
from pipeline.io.console import parse_stage_args, run
from pipeline.io.files import atomic_path, write_json


def classifier_lines(classifiers: dict[str, str]) -> list[str]:
    """One line per classifier the folds chose: 'every fold: lda' when they agree, else e.g.
    'folds 1, 2, 4: lda' and 'fold 0: logistic'."""
    folds_of: dict[str, list[str]] = {}
    for fold, chosen in classifiers.items():
        folds_of.setdefault(chosen, []).append(fold)
    if len(folds_of) == 1:
        return [f"every fold: {next(iter(folds_of))}"]
    return [
        f"{'fold' if len(folds) == 1 else 'folds'} {', '.join(folds)}: {chosen}"
        for chosen, folds in folds_of.items()
    ]


def main(argv: list[str] | None = None) -> dict:
    parse_stage_args(argv, __doc__, "python3 -m pipeline.stages.meta")
    params = load_params()
    settings = params.meta
    if not settings.enabled:
        with atomic_path(META_DIR) as out:
            out.mkdir()
        write_json(META_METRICS, {"enabled": False})
        print("meta: off (meta.enabled: false); the ensemble uses the networks only")
        return {"enabled": False}
    folds = read_input_table(FOLDS_FILE, ("image", "path", "target", "fold"))
    test = read_input_table(PREPARED_TEST, ("image", "path"))
    num_classes = len(read_class_list(CLASSES_FILE))
    check_targets(folds, num_classes, FOLDS_FILE)
    groups = settings.features
    print(f"meta: measuring {', '.join(groups)} features of {len(folds) + len(test)} images")
    features = feature_table(folds["path"], groups, desc="meta: labelled images")
    test_features = feature_table(test["path"], groups, desc="meta: test images")
    models = fit_models(features, folds, params.train.folds, settings, num_classes)
    print(f"meta: fitting the test images' classifier on all {len(folds)} labelled rows")
    all_rows = fit_all_rows(features, folds, settings, num_classes)
    cells = fold_logits(models, all_rows, features, folds, test_features)
    targets = folds["target"].to_numpy()
    per_fold = {str(f): accuracy(oof, targets[rows]) for f, (rows, oof, _) in cells.items()}
    scored = np.concatenate([rows for rows, _, _ in cells.values()])
    oof = np.concatenate([oof for _, oof, _ in cells.values()])
    metrics = {
        "enabled": True,
        "oof_accuracy": accuracy(oof, targets[scored]),
        "folds": per_fold,
        "features": list(features.columns),
        "classifiers": {str(fold): model.classifier for fold, model in models.items()},
        "test_classifier": all_rows.classifier,
    }
    table = pd.concat(
        [
            pd.DataFrame({"split": "train", "image": folds["image"]}).join(features),
            pd.DataFrame({"split": "test", "image": test["image"]}).join(test_features),
        ],
        ignore_index=True,
    )
    write_cells(cells, table, all_rows)
    write_json(META_METRICS, metrics)
    for line in classifier_lines(metrics["classifiers"]):
        print(f"meta: classifier of {line}")
    print(f"meta: classifier of the test images (all {len(folds)} rows): {all_rows.classifier}")
    print(
        f"meta: OOF accuracy {metrics['oof_accuracy']:.4f} over {len(cells)} fold(s) on "
        f"{len(features.columns)} features -> {META_DIR}, {META_METRICS}"
    )
    return metrics


if __name__ == "__main__":
    run(main)
