"""Stage meta's model: classifiers on image statistics, one per fold and one on every
labelled row; fit and predict.

The classifier is discriminant analysis (pipeline.ensemble.discriminant), a logistic regression,
or a weighted average of their probabilities (`meta.classifier: auto` weighs them per fold).
The discriminant's shrinkage of its shared covariance (Ledoit-Wolf's estimate or a few fixed
values) and each class's share of its own covariance are chosen per fold too. All three choices
come from one cross-validation inside the fold's training rows (`choose_classifier`).
Stage `meta` fits one per fold on the other folds' rows for its OOF predictions (`fit_models`),
and one on every labelled row for the test images (`fit_all_rows`): with few images a class a
quarter more rows is worth having (BENCHMARKS.md). It saves the latter through
pipeline.ensemble.cells (`write_cells`); pipeline.tools.predict reads it back (`load_model`) and
applies it to the features (pipeline.ensemble.features) of new images.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.special import softmax
from sklearn.ensemble import VotingClassifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, train_test_split
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import MinMaxScaler, StandardScaler

from pipeline.config.schema import MetaParams
from pipeline.ensemble.cells import read_meta_model
from pipeline.ensemble.discriminant import LEDOIT_WOLF, ClassStatistics, RegularizedDiscriminant
from pipeline.ensemble.scoring import selection_score
from pipeline.io.console import PipelineError, progress

# The probability of a class a fold's training rows do not contain (and the floor of any).
ABSENT_CLASS_PROB = 1e-6
ABSENT_CLASS_LOG_PROB = math.log(ABSENT_CLASS_PROB)
# `meta.classifier`: LDA's share of the averaged probabilities (logistic has the rest); `auto`
# cross-validates each of its weights inside the fold's training rows.
CLASSIFIER_LDA_WEIGHTS = {"lda": (1.0,), "logistic": (0.0,), "auto": (0.0, 0.25, 0.5, 0.75, 1.0)}
# LDA's shrinkage of each class's covariance, cross-validated with the weight: Ledoit-Wolf's
# estimate from the class's own rows, or a fixed one. Ledoit-Wolf suits a few rows a class in
# many dimensions; with more rows a class it can shrink far too much (stage meta alone on a
# synthetic set of 40 species: 0.854 against 0.922, BENCHMARKS.md).
LDA_SHRINKAGES = (LEDOIT_WOLF, 0.02, 0.05, 0.1, 0.2, 0.4)
# Each class's share of its own covariance, cross-validated with them: 0 is LDA. Real leaves
# take some (the silhouettes 0.05-0.2), synthetic ones, drawn with one variation for every
# species, mostly none (BENCHMARKS.md).
CLASS_SHARES = (0.0, 0.05, 0.1, 0.2)
# Inner folds of that cross-validation: with 5 its models see 4/5 of the rows, near the rows a
# class the chosen model is fitted on, which matters for the shrinkage (with 3 the silhouettes'
# model of the test images took 0.1 on one inner split of four, where Ledoit-Wolf's is 0.8
# points better on every outer split, BENCHMARKS.md).
INNER_SPLITS = 5
# Newton steps of the logistic fit: it converges in about 15 on the proxies (lbfgs took 30-300
# iterations and 2.4-32x the time for the same accuracy, BENCHMARKS.md).
LOGISTIC_MAX_ITER = 100
# Past this many rows `auto` chooses on a stratified sample of them: the choice needs no more,
# and at Classify Leaves' size (14,700 rows a fold, 176 classes) every inner fit costs seconds.
INNER_MAX_ROWS = 4000
# The features' precision as the classifiers get them. The logistic fit runs in it: float32 takes
# a third of float64's time at Classify Leaves' size, for the same accuracy (BENCHMARKS.md).
# The discriminant computes in float64 whatever it is given.
FEATURE_DTYPE = np.float32


@dataclass(frozen=True)
class ClassifierChoice:
    """What `make_classifier` builds: LDA's weight in the average of probabilities (logistic
    has the rest), its shrinkage and each class's share of its own covariance."""

    lda_weight: float
    shrinkage: float | str = LEDOIT_WOLF
    class_share: float = 0.0


@dataclass(frozen=True)
class MetaModel:
    """A fitted classifier of stage meta (a fold's, or the test images') and what applying it
    needs.

    Attributes:
        pipeline: `scaling_steps` then the classifier (`make_classifier`), fitted on a fold's
            training rows or on every labelled row; its `classes_` are class indices (the ones
            those rows contain).
        num_classes: the number of classes (data/prepared/classes.json) the logits cover.
        groups: `meta.features`, the feature groups it was fitted on.
        columns: the feature columns, in the order the pipeline expects them.
    """

    pipeline: Pipeline
    num_classes: int
    groups: list[str]
    columns: list[str]

    def log_probs(self, features: pd.DataFrame) -> np.ndarray:
        """(rows, num_classes) float32 log-probabilities of a table of features."""
        missing = [column for column in self.columns if column not in features.columns]
        if missing:
            raise PipelineError(
                f"stage meta's model needs the feature(s) {', '.join(missing)}; "
                "run `dvc repro meta` to refit it with this version's features"
            )
        x = features[self.columns].to_numpy(FEATURE_DTYPE)
        out = np.full((len(x), self.num_classes), ABSENT_CLASS_LOG_PROB, dtype=np.float32)
        probs = self.pipeline.predict_proba(x)
        out[:, self.pipeline.classes_] = np.log(np.maximum(probs, ABSENT_CLASS_PROB))
        return out

    @property
    def classifier(self) -> str:
        """lda, logistic, or their mix, e.g. 'lda 0.75 + logistic 0.25'; in brackets LDA's
        shrinkage when it is not Ledoit-Wolf's and the classes' share of their own covariance
        when it has one, e.g. 'lda (shrinkage 0.05, class covariance 0.1)'."""
        last = self.pipeline.steps[-1][1]
        if isinstance(last, VotingClassifier):
            lda, logistic = last.weights
            note = regularisation_note(last.named_estimators_["lda"])
            return f"lda {lda:g}{note} + logistic {logistic:g}"
        if isinstance(last, RegularizedDiscriminant):
            return f"lda{regularisation_note(last)}"
        return "logistic"

    def spec(self) -> dict:
        """What is saved beside the pickled pipeline (JSON)."""
        return {"num_classes": self.num_classes, "groups": self.groups, "columns": self.columns}


def regularisation_note(lda: RegularizedDiscriminant) -> str:
    notes = [] if lda.shrinkage == LEDOIT_WOLF else [f"shrinkage {lda.shrinkage:g}"]
    notes += [f"class covariance {lda.class_share:g}"] if lda.class_share else []
    return f" ({', '.join(notes)})" if notes else ""


def scaling_steps() -> list:
    """Standardise each feature after clipping a new row to the training rows' range (an
    artefact far outside it, in a column nearly constant in training, would outweigh every
    other feature in the discriminant, BENCHMARKS.md). A column constant in training: to +1."""
    return [MinMaxScaler(clip=True), StandardScaler()]


def make_classifier(choice: ClassifierChoice, C: float) -> Pipeline:
    """`scaling_steps`, then discriminant analysis (`RegularizedDiscriminant`, LDA at class
    share 0) with weight `choice.lda_weight` and a logistic regression (L2, inverse strength C)
    with the rest: one of them alone at weight 1 or 0, else the average of their
    probabilities."""
    lda = RegularizedDiscriminant(choice.shrinkage, choice.class_share)
    logistic = LogisticRegression(C=C, solver="newton-cg", max_iter=LOGISTIC_MAX_ITER)
    weight = choice.lda_weight
    if weight in (0.0, 1.0):
        classifier = lda if weight else logistic
    else:
        classifier = VotingClassifier(
            [("lda", lda), ("logistic", logistic)], voting="soft", weights=[weight, 1 - weight]
        )
    return make_pipeline(*scaling_steps(), classifier)


def fitted(pipeline: Pipeline, x: np.ndarray, y: np.ndarray) -> Pipeline:
    with warnings.catch_warnings():
        # A nearly separable fold may stop at LOGISTIC_MAX_ITER; its solution is still usable.
        warnings.simplefilter("ignore", ConvergenceWarning)
        return pipeline.fit(x, y)


def inner_choice_rows(y: np.ndarray) -> tuple[np.ndarray, int]:
    """The rows `choose_classifier` compares on, and its inner folds: INNER_SPLITS (or the median
    class's row count) over the classes with as many rows; a rarer class sits the choice out."""
    classes, sizes = np.unique(y, return_counts=True)
    splits = int(min(INNER_SPLITS, np.median(sizes)))
    return np.flatnonzero(np.isin(y, classes[sizes >= splits])), splits


def choose_classifier(
    x: np.ndarray, y: np.ndarray, lda_weights: tuple[float, ...], C: float
) -> ClassifierChoice:
    """Of `lda_weights`, LDA_SHRINKAGES and CLASS_SHARES, the choice whose average of lda's and
    logistic's probabilities classifies most of these rows right in an inner cross-validation
    on them alone (so a fold's OOF rows never take part), the lower log-loss breaking a tie
    (`scoring.selection_score`, as the ensemble's weights are chosen). Logistic alone needs no
    choice; a median class of one row allows none: logistic for `auto`, LDA with Ledoit-Wolf's
    shrinkage for `lda`. Past INNER_MAX_ROWS rows the comparison runs on a stratified sample."""
    if lda_weights == (0.0,):
        return ClassifierChoice(0.0)
    rows, splits = inner_choice_rows(y)
    if splits >= 2 and len(rows) > INNER_MAX_ROWS:
        rows, _ = train_test_split(
            rows, train_size=INNER_MAX_ROWS, stratify=y[rows], random_state=0
        )
        kept, splits = inner_choice_rows(y[rows])
        rows = rows[kept]
    if splits < 2:
        return ClassifierChoice(min(lda_weights))
    x, y = x[rows], y[rows]
    with_logistic = min(lda_weights) < 1.0
    lda_probs, logistic_probs = inner_probabilities(x, y, splits, with_logistic, C)
    truth = np.searchsorted(np.unique(y), y)

    def score(choice: ClassifierChoice) -> tuple[float, float]:
        weight = choice.lda_weight
        probs = (1 - weight) * logistic_probs
        if weight:
            probs = probs + weight * lda_probs[choice.shrinkage, choice.class_share]
        return selection_score(np.log(np.maximum(probs, ABSENT_CLASS_PROB)), truth)

    # the simplest first (logistic, Ledoit-Wolf's, no class's own covariance): the first of
    # equal scores wins
    choices = [ClassifierChoice(0.0)] if 0.0 in lda_weights else []
    settings = [(shrinkage, share) for share in CLASS_SHARES for shrinkage in LDA_SHRINKAGES]
    choices += [ClassifierChoice(w, *setting) for setting in settings for w in lda_weights if w]
    return max(choices, key=score)


def inner_probabilities(
    x: np.ndarray, y: np.ndarray, splits: int, with_logistic: bool, C: float
) -> tuple[dict[tuple, np.ndarray], np.ndarray]:
    """Each row's class probabilities from the one of `splits` inner folds that left it out: by
    LDA with each shrinkage of LDA_SHRINKAGES and class share of CLASS_SHARES, all from one
    fit's class statistics, and by logistic (zeros without it)."""
    classes = np.unique(y)  # every inner training split holds each of them
    logistic_probs = np.zeros((len(y), len(classes)))
    lda_probs = {}
    for train, valid in StratifiedKFold(splits, shuffle=True, random_state=0).split(x, y):
        scaler = make_pipeline(*scaling_steps()).fit(x[train])
        statistics = ClassStatistics(scaler.transform(x[train]), y[train])
        scaled = scaler.transform(x[valid])
        for shrinkage in LDA_SHRINKAGES:
            whitened = statistics.whitened(shrinkage, with_own=True)
            scores = whitened.log_densities(scaled, CLASS_SHARES)
            for share, share_scores in zip(CLASS_SHARES, scores, strict=True):
                probs = lda_probs.setdefault((shrinkage, share), np.zeros_like(logistic_probs))
                probs[valid] = softmax(share_scores, axis=1)
        if with_logistic:
            model = fitted(make_classifier(ClassifierChoice(0.0), C), x[train], y[train])
            logistic_probs[valid] = model.predict_proba(x[valid])
    return lda_probs, logistic_probs


def fit_fold(
    train_x: pd.DataFrame, train_y: np.ndarray, params: MetaParams, num_classes: int
) -> MetaModel:
    """`meta.classifier` on standardised features (`scaling_steps`), LDA's weight, shrinkage
    and class share chosen by `choose_classifier`, fitted on these rows (a fold's training
    rows, or every labelled row)."""
    x = train_x.to_numpy(FEATURE_DTYPE)
    choice = choose_classifier(x, train_y, CLASSIFIER_LDA_WEIGHTS[params.classifier], params.C)
    pipeline = fitted(make_classifier(choice, params.C), x, train_y)
    return MetaModel(pipeline, num_classes, list(params.features), list(train_x.columns))


def fit_models(
    features: pd.DataFrame,
    folds: pd.DataFrame,
    fold_ids: list[int],
    params: MetaParams,
    num_classes: int,
) -> dict[int, MetaModel]:
    """fold -> its classifier, fitted on the rows of the other folds (as the networks train)."""
    targets, fold_of_row = folds["target"].to_numpy(), folds["fold"].to_numpy()
    # minutes a fold at Classify Leaves' size on a few cores (BENCHMARKS.md): show the ETA
    return {
        fold: fit_fold(
            features[fold_of_row != fold], targets[fold_of_row != fold], params, num_classes
        )
        for fold in progress(fold_ids, desc="meta: fitting", unit="fold")
    }


def fit_all_rows(
    features: pd.DataFrame, folds: pd.DataFrame, params: MetaParams, num_classes: int
) -> MetaModel:
    """The classifier of the test images: `fit_fold` on every labelled row."""
    return fit_fold(features, folds["target"].to_numpy(), params, num_classes)


def fold_logits(
    models: dict[int, MetaModel],
    all_rows: MetaModel,
    features: pd.DataFrame,
    folds: pd.DataFrame,
    test_features: pd.DataFrame,
) -> dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """fold -> (its validation rows, their OOF log-probs by its model, the test log-probs by
    `all_rows`, the same in every fold)."""
    fold_of_row = folds["fold"].to_numpy()
    test = all_rows.log_probs(test_features)
    cells = {}
    for fold, model in models.items():
        rows = np.flatnonzero(fold_of_row == fold)
        cells[fold] = (rows, model.log_probs(features.iloc[rows]), test)
    return cells


def load_model() -> MetaModel | None:
    """Stage meta's classifier of the test images as it saved it (models/meta/); None if absent."""
    saved = read_meta_model()
    return None if saved is None else MetaModel(saved[0], **saved[1])
