import pandas as pd
import pytest

from pipeline.io.console import PipelineError
from pipeline.stages.split import assign_folds


def make_train(counts: dict[str, int]) -> pd.DataFrame:
    classes = sorted(counts)
    rows = [
        (f"images/{label}_{i}.jpg", label, classes.index(label))
        for label, n in counts.items()
        for i in range(n)
    ]
    return pd.DataFrame(rows, columns=["image", "label", "target"])


@pytest.fixture
def train():
    return make_train({"acer": 12, "betula": 7, "carpinus": 5, "quercus": 20})


def test_every_row_gets_exactly_one_fold(train):
    folds = assign_folds(train, n_splits=5, shuffle=True, seed=0)
    assert len(folds) == len(train)
    assert folds["image"].tolist() == train["image"].tolist()
    assert set(folds["fold"]) == set(range(5))


def test_every_class_in_every_validation_fold(train):
    folds = assign_folds(train, n_splits=5, shuffle=True, seed=0)
    per_fold = folds.groupby("fold")["label"].nunique()
    assert (per_fold == train["label"].nunique()).all()


def test_classes_spread_evenly(train):
    folds = assign_folds(train, n_splits=5, shuffle=True, seed=0)
    counts = folds.groupby(["label", "fold"]).size().unstack()
    assert (counts.max(axis=1) - counts.min(axis=1) <= 1).all()


def test_no_leakage_between_train_and_validation(train):
    folds = assign_folds(train, n_splits=5, shuffle=True, seed=0)
    for fold in range(5):
        valid = set(folds.image[folds.fold == fold])
        rest = set(folds.image[folds.fold != fold])
        assert valid and rest and not valid & rest


def test_same_seed_same_folds_other_seed_other_folds(train):
    first = assign_folds(train, n_splits=5, shuffle=True, seed=1)
    again = assign_folds(train, n_splits=5, shuffle=True, seed=1)
    other = assign_folds(train, n_splits=5, shuffle=True, seed=2)
    assert first["fold"].tolist() == again["fold"].tolist()
    assert first["fold"].tolist() != other["fold"].tolist()


def test_class_smaller_than_n_splits_is_named(train):
    with pytest.raises(PipelineError) as err:
        assign_folds(train, n_splits=6, shuffle=True, seed=0)
    message = str(err.value)
    assert "split.n_splits = 6" in message
    assert "'carpinus' (5)" in message
    assert "at most 5" in message


def test_stage_refuses_small_class_and_writes_nothing(tmp_path, monkeypatch, train):
    from pipeline.stages import split as split_stage

    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(
        "split: {n_splits: 6}\ntrain:\n  models: {d2l_resnet11: {}}\n  folds: [0]\n"
    )
    (tmp_path / "data/prepared").mkdir(parents=True)
    train.to_csv(tmp_path / "data/prepared/train.csv", index=False)
    with pytest.raises(PipelineError, match="'carpinus' \\(5\\)"):
        split_stage.main([])
    assert not (tmp_path / "data/folds.csv").exists()
    assert list((tmp_path / "data").iterdir()) == [tmp_path / "data/prepared"]
