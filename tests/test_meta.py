"""Stage `meta`: its params, its summary line, and the stage on a finished tiny run with its
ensemble membership. Its image features: test_meta_features.py; its classifier:
test_meta_model.py."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from helpers.meta import REGULARISATION

from pipeline.config import paths
from pipeline.config.params import ParamsError, parse_params
from pipeline.config.paths import (
    ENSEMBLE_METRICS,
    META_METRICS,
    OOF_NAME,
    PSEUDO_DIR,
    TEST_LOGITS_NAME,
)
from pipeline.ensemble.blade_features import BLADE_FEATURES
from pipeline.ensemble.features import OUTLINE_FEATURES, TURN_PAIR_FEATURES
from pipeline.ensemble.region_features import DISC_FEATURES, RINGS_FEATURES, WIDTHS_FEATURES
from pipeline.io.files import read_json
from pipeline.stages import ensemble, meta, pseudo


def test_the_summary_names_each_folds_classifier_one_line_each():
    assert meta.classifier_lines({"0": "lda", "1": "lda"}) == ["every fold: lda"]
    mixed = {"0": "logistic", "1": "lda", "2": "lda", "3": "logistic", "4": "lda 0.5"}
    assert meta.classifier_lines(mixed) == [
        "folds 0, 3: logistic",
        "folds 1, 2: lda",
        "fold 4: lda 0.5",
    ]


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({"features": ["size", "texture"]}, "meta.features.1 = 'texture'"),
        ({"features": []}, "meta.features = []: must be a non-empty list"),
        (
            {"features": ["size", "size"]},
            "distinct groups: size, shape, outline, turn_pairs, disc, widths, rings, blade, colour",
        ),
        ({"C": 0}, "meta.C = 0: Input should be greater than 0"),
        ({"classifier": "svm"}, "meta.classifier = 'svm'"),
        ({"enable": True}, "meta.enable: unknown key"),
    ],
)
def test_schema_errors_name_the_key(settings, expected):
    with pytest.raises(ParamsError) as info:
        parse_params({"train": {"models": {"d2l_resnet11": {}}}, "meta": settings})
    assert expected in str(info.value)


def test_a_network_cannot_be_named_meta():
    with pytest.raises(ParamsError, match="train.models.meta: the name is taken by stage meta"):
        parse_params({"train": {"models": {"meta": {"backbone": "resnet18"}}}})


def test_shipped_stage_is_on_with_the_outline_features():
    shipped = yaml.safe_load(Path("params.yaml").read_text())["meta"]
    assert shipped["enabled"] is True and "outline" in shipped["features"]


# ----------------------------------------------------------------------------------------------
# The stage, on a copy of the finished tiny run (3 classes, 2 folds, 1 network)


def set_params(workdir: Path, group: str, **settings) -> None:
    path = workdir / "params.yaml"
    params = yaml.safe_load(path.read_text())
    params[group].update(settings)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def test_off_stage_writes_an_empty_model_and_the_ensemble_leaves_it_out(run_copy, capsys):
    set_params(run_copy, "meta", enabled=False)
    assert meta.main([]) == {"enabled": False}
    assert list(paths.META_DIR.iterdir()) == []
    assert read_json(META_METRICS) == {"enabled": False}
    assert "meta: off" in capsys.readouterr().out
    assert set(ensemble.main([])["models"]) == {"d2l_resnet11"}


def test_on_stage_writes_cells_like_train_and_joins_the_ensemble(run_copy, capsys):
    set_params(run_copy, "meta", enabled=True)
    metrics = meta.main([])
    folds = pd.read_csv("data/folds.csv")
    test = pd.read_csv("data/prepared/test.csv")
    num_classes = len(read_json("data/prepared/classes.json"))
    for fold in (0, 1):
        cell = paths.META_DIR / f"fold{fold}"
        with np.load(cell / OOF_NAME) as saved:
            assert (saved["row"] == np.flatnonzero(folds["fold"] == fold)).all()
            assert saved["logits"].shape == (len(saved["row"]), num_classes)
        assert np.load(cell / TEST_LOGITS_NAME).shape == (len(test), num_classes)
    table = pd.read_csv(paths.META_DIR / paths.FEATURES_NAME)
    assert (table["split"] == "train").sum() == len(folds) and len(table) == len(folds) + len(test)
    assert read_json(META_METRICS) == metrics and set(metrics["folds"]) == {"0", "1"}
    columns = len(metrics["features"])  # the shipped groups: size 3, shape 9, outline 84, ...
    assert columns == 3 + 9 + sum(
        map(
            len,
            (
                OUTLINE_FEATURES,
                TURN_PAIR_FEATURES,
                DISC_FEATURES,
                WIDTHS_FEATURES,
                RINGS_FEATURES,
                BLADE_FEATURES,
            ),
        )
    )
    assert set(metrics["classifiers"]) == {"0", "1"}
    mix = rf"(lda( 0\.25| 0\.5| 0\.75)?{REGULARISATION}( \+ logistic 0\.[0-9]+)?|logistic)"
    mix += "(, groups weighed alike)?"
    assert all(re.fullmatch(mix, chosen) for chosen in metrics["classifiers"].values())
    out = capsys.readouterr().out
    assert re.search(rf"meta: OOF accuracy [0-9.]+ over 2 fold\(s\) on {columns} features", out)
    assert "meta: classifier of the test images (all" in out

    set_params(run_copy, "ensemble", weights="fit")
    scores = ensemble.main([])
    assert set(scores["models"]) == {"d2l_resnet11", "meta"}
    assert scores["models"]["meta"]["oof_accuracy"] == pytest.approx(metrics["oof_accuracy"])
    assert sum(scores["weights"].values()) == pytest.approx(1.0)
    assert read_json(ENSEMBLE_METRICS) == scores

    # A pseudo-label round fine-tunes the network and keeps stage meta's cells as they are.
    set_params(run_copy, "pseudo", enabled=True, threshold=0.3, epochs=1)
    pseudo.main([])
    out = capsys.readouterr().out
    assert "pseudo d2l_resnet11 fold 0: fine-tuning" in out and "pseudo meta" not in out
    assert (PSEUDO_DIR / TEST_LOGITS_NAME).is_file()
