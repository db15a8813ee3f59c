"""Stage `pseudo`: an optional pseudo-label round that fine-tunes every trained fold model.

    python -m pipeline.stages.pseudo

Off by default (`pseudo.enabled: false`): the stage then only writes data/pseudo/manifest.json and
results/pseudo/metrics.json saying so, and `submit` uses the ensemble's predictions. When on
(pipeline.ensemble.pseudo_round), for every fold k:
1. Label the test images that fold k's models (train.models, averaged in `ensemble.average`
   space) predict with softmax confidence >= `pseudo.threshold`, with their likeliest class. The
   labels come from fold k's own models, which never saw fold k's validation images: labels
   from the whole ensemble would carry what the other folds' models learnt from those images
   into fold k's model, and the OOF accuracy after the round would flatter it.
2. Fine-tune each models/<model>/fold<k>/best.pt for `pseudo.epochs` on fold k's training
   images plus the labelled test images, with the model's own settings and augmentation and
   its learning rate times `pseudo.lr_scale`; keep an epoch's weights as `keep` says, like train.
3. Predict fold k's validation images (OOF) and the test set with the model's TTA views.
A fold whose models label no test image keeps its trained predictions, and so does stage meta's
classifier (meta.enabled), which is not fine-tuned. The cells are combined
like stage `ensemble` does (over folds, then over models with `ensemble.weights`) and written,
atomically, to data/pseudo/ (manifest.json, oof_logits.npy, test_logits.npy); when no fold
labels any test image the round changes nothing, and the manifest sends `submit` to the
ensemble's predictions. results/pseudo/metrics.json has the number and share of test images
labelled per fold and the OOF accuracy before (the ensemble's) and after the round, under one
key `pseudo` (so `dvc exp show` heads them pseudo.oof_accuracy etc., apart from the ensemble's).
"""

from __future__ import annotations

import numpy as np

from pipeline.config.params import load_params
from pipeline.config.paths import (
    OOF_LOGITS_NAME,
    PSEUDO_DIR,
    PSEUDO_MANIFEST,
    PSEUDO_METRICS,
    TEST_LOGITS_NAME,
)
from pipeline.io.console import parse_stage_args, run
from pipeline.io.files import atomic_path, write_json


def write_round(manifest: dict, oof: np.ndarray | None, test: np.ndarray | None) -> None:
    """data/pseudo/: the manifest, plus the round's logits when it changed predictions."""
    with atomic_path(PSEUDO_DIR) as out:
        out.mkdir()
        write_json(out / PSEUDO_MANIFEST.name, manifest)
        if oof is not None:
            np.save(out / OOF_LOGITS_NAME, oof)
            np.save(out / TEST_LOGITS_NAME, test)


def main(argv: list[str] | None = None) -> dict:
    parse_stage_args(argv, __doc__, "python3 -m pipeline.stages.pseudo")
    params = load_params()
    if not params.pseudo.enabled:
        metrics = {"enabled": False}
        write_round({"enabled": False, "fine_tuned": False}, None, None)
        write_json(PSEUDO_METRICS, {"pseudo": metrics})
        print("pseudo: the pseudo-label round is off (pseudo.enabled: false); nothing to do")
        return metrics
    # Imported here: the round needs torch and the training code, which take seconds to load
    # for a stage that is off by default.
    from pipeline.ensemble.pseudo_round import run_round

    metrics, oof, test = run_round(params)
    manifest = {key: metrics[key] for key in ("enabled", "fine_tuned", "pseudo_labelled")}
    write_round(manifest, oof, test)
    write_json(PSEUDO_METRICS, {"pseudo": metrics})
    if not metrics["fine_tuned"]:
        print(
            f"pseudo: no test image reached pseudo.threshold = {params.pseudo.threshold:g}; "
            f"the ensemble's predictions stand -> {PSEUDO_METRICS}"
        )
    else:
        print(
            f"pseudo: OOF accuracy {metrics['oof_accuracy_before']:.4f} (ensemble) -> "
            f"{metrics['oof_accuracy']:.4f} after the round -> {PSEUDO_METRICS}"
        )
    return metrics


if __name__ == "__main__":
    run(main)
