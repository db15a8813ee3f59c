import pandas as pd
import pytest

from pipeline.io.console import PipelineError
from pipeline.stages.split import assign_folds, keep_copies_together


def make_train(counts: dict[str, int]) -> pd.DataFrame:
    classes = sorted(counts)
    rows = [
        (f"images/{label}_{i}.jpg", label, classes.index(label))
        for label, n in counts.items()
        for i in range(n)
    ]
    train = pd.DataFrame(rows, columns=["image", "label", "target"])
    return train.assign(md5=[f"md5-{i}" for i in range(len(train))])  # no two alike


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


def test_a_class_rarer_than_the_folds_is_named_in_a_warning_and_spread(train, capsys, recwarn):
    folds = assign_folds(train, n_splits=6, shuffle=True, seed=0)
    sklearn_own = [w for w in recwarn.list if "least populated class" in str(w.message)]
    assert not sklearn_own  # our warning below names the classes; sklearn's is not shown too
    err = capsys.readouterr().err
    assert err.startswith("warning: split.n_splits = 6: 1 class(es) have fewer images than folds")
    assert "'carpinus' (5)" in err and "acer" not in err
    per_class = folds.groupby("label")["fold"].nunique()
    assert per_class["carpinus"] == 5 and (per_class.drop("carpinus") == 6).all()


def test_a_class_of_one_image_is_in_one_fold():
    folds = assign_folds(make_train({"acer": 12, "solus": 1}), n_splits=5, shuffle=True, seed=0)
    assert (folds.label == "solus").sum() == 1
    assert set(folds.fold[folds.label == "acer"]) == set(range(5))


@pytest.mark.parametrize(
    ("counts", "advice"),
    [
        ({"acer": 4, "betula": 3}, "lower split.n_splits to at most 4"),
        ({"acer": 1, "betula": 1}, "every class has a single image"),
    ],
)
def test_every_class_rarer_than_the_folds_is_an_error(counts, advice):
    with pytest.raises(PipelineError) as err:
        assign_folds(make_train(counts), n_splits=5, shuffle=True, seed=0)
    assert str(err.value).startswith("split.n_splits = 5: every class has fewer images than folds")
    assert advice in str(err.value)


def test_stage_refuses_too_few_images_and_writes_nothing(tmp_path, monkeypatch):
    from pipeline.stages import split as split_stage

    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(
        "split: {n_splits: 6}\ntrain:\n  models: {d2l_resnet11: {}}\n  folds: [0]\n"
    )
    (tmp_path / "data/prepared").mkdir(parents=True)
    make_train({"acer": 4, "betula": 5}).to_csv(tmp_path / "data/prepared/train.csv", index=False)
    with pytest.raises(PipelineError, match="at most 5"):
        split_stage.main([])
    assert not (tmp_path / "data/folds.csv").exists()
    assert list((tmp_path / "data").iterdir()) == [tmp_path / "data/prepared"]


def test_exact_copies_share_a_fold_and_other_folds_stay():
    train = make_train({"acer": 12, "betula": 7, "carpinus": 5, "quercus": 20})
    alone = assign_folds(train, n_splits=5, shuffle=True, seed=0)
    assert keep_copies_together(alone.copy()) == 0  # no copies: the folds as they were
    copied = train.copy()
    copies = {3: 0, 4: 0, 30: 25, 31: 25, 43: 25}  # row -> the row it is a copy of
    for row, original in copies.items():
        copied.loc[row, "md5"] = copied.loc[original, "md5"]
    folds = assign_folds(copied, n_splits=5, shuffle=True, seed=0)
    moved = keep_copies_together(folds)
    assert moved == sum(alone["fold"][row] != alone["fold"][of] for row, of in copies.items())
    assert moved > 0  # seed 0 splits some copies apart
    for row, original in copies.items():
        assert folds["fold"][row] == folds["fold"][original] == alone["fold"][original]
    others = ~folds.index.isin(list(copies))
    assert (folds["fold"][others] == alone["fold"][others]).all()


def test_copies_under_other_labels_are_named_in_a_warning(capsys):
    from pipeline.stages.split import warn_of_copies_labelled_apart

    folds = make_train({"acer": 3, "betula": 3}).assign(fold=0)
    warn_of_copies_labelled_apart(folds)
    assert capsys.readouterr().err == ""
    folds.loc[4, "md5"] = folds.loc[0, "md5"]  # a betula image that is an acer's copy
    warn_of_copies_labelled_apart(folds)
    assert capsys.readouterr().err == (
        "warning: 1 image(s) have copies labelled otherwise, e.g. "
        "images/acer_0.jpg ('acer') and images/betula_1.jpg ('betula'); "
        "the models are trained on both\n"
    )
