import copy

import pytest
import yaml
from helpers.params import MINIMAL, problems, with_change

from pipeline.config.checks import CHECKS
from pipeline.config.params import ParamsError, load_params, parse_params


def test_project_params_validate():
    params = load_params("params.yaml")
    assert params.train.models
    for name in params.train.models:
        params.train.for_model(name)


def test_minimal_params_take_defaults():
    params = parse_params(MINIMAL)
    assert params.split.n_splits == 5
    assert params.train.for_model("d2l_resnet11").epochs > 0


def test_model_overrides_merge_deeply():
    raw = with_change("train.models.resnet18", {"optimizer": {"lr": 0.5}, "epochs": 3})
    params = parse_params(raw)
    merged = params.train.for_model("resnet18")
    assert merged.optimizer.lr == 0.5
    assert merged.optimizer.name == params.train.defaults.optimizer.name
    assert merged.epochs == 3
    assert params.train.for_model("d2l_resnet11").epochs == params.train.defaults.epochs


def test_each_models_settings_are_merged_once_on_load():
    params = parse_params(with_change("train.models.resnet18", {"epochs": 3}))
    assert params.train.for_model("resnet18") is params.train.for_model("resnet18")
    assert params.train.for_model("not_listed") == params.train.defaults


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        ("train.defaults.epochs", -1, "train.defaults.epochs = -1: Input should be greater than 0"),
        ("train.defaults.epochs", "ten", "train.defaults.epochs = 'ten'"),
        ("train.defaults.batch_size", 0, "train.defaults.batch_size = 0"),
        ("train.epoch", 3, "train.epoch: unknown key"),
        ("trian", {}, "trian: unknown key"),
        ("train.device", "gpu", "train.device = 'gpu': allowed: auto, cpu, cuda"),
        ("train.defaults.optimizer", {"name": "lion"}, "train.defaults.optimizer.name = 'lion'"),
        ("train.defaults.tta", ["flip"], "train.defaults.tta.views.0 = 'flip'"),
        ("train.defaults.tta", {"views": ["scale3"]}, "'scale3'; allowed: identity, hflip"),
        ("train.defaults.tta", {"views": []}, "train.defaults.tta.views = []: needs at least"),
        ("train.defaults.tta", {"average": "mean"}, "train.defaults.tta.average = 'mean'"),
        ("ensemble.weights", "best", "ensemble.weights = 'best': Input should be 'equal' or"),
        ("train.folds", [0, 7], "train.folds = [0, 7]: folds [7] do not exist"),
        ("split.n_splits", 1, "split.n_splits = 1"),
        ("generate.test_share", 1.5, "generate.test_share = 1.5"),
        ("data.test_csv", "/data/test.csv", "data.test_csv = '/data/test.csv': must be relative"),
        ("data.submission_columns", ["id"], "data.submission_columns = ['id']: must be two"),
        ("data.train_images", "../images", "data.train_images = '../images': must be a folder"),
        ("data.test_images", "/data/x", "data.test_images = '/data/x': must be a folder inside"),
        ("data.image_suffix", "png", "data.image_suffix = 'png': must be empty or a file suffix"),
        ("data.submission_columns", ["id", "id"], "['id', 'id']: must be two different"),
        ("data.submission_columns", ["id", " "], "data.submission_columns = ['id', ' ']"),
        ("data.submission_columns", "id,label", "= 'id,label': must be two different, non-empty"),
    ],
)
def test_invalid_value_names_key_and_value(path, value, expected):
    assert expected in problems(with_change(path, value))


def test_unknown_backbone_suggests_close_names():
    message = problems(with_change("train.models.resnet1800", {}))
    assert "train.models.resnet1800: unknown backbone 'resnet1800'" in message
    assert "resnet18" in message and "timm.list_models()" in message


def test_unknown_backbone_key_named_when_set_explicitly():
    message = problems(with_change("train.models.mine", {"backbone": "tv:resnet1800"}))
    assert "train.models.mine.backbone: unknown backbone 'tv:resnet1800'" in message


def test_stochastic_depth_on_a_model_without_it_names_the_key_and_the_model():
    # MINIMAL trains d2l_resnet11; the d2l and torchvision nets have no drop_path_rate
    message = problems(with_change("train.defaults.drop_path_rate", 0.1))
    assert "train.defaults.drop_path_rate = 0.1: only timm models have stochastic depth" in message
    assert "set train.models.d2l_resnet11.drop_path_rate: 0" in message
    message = problems(with_change("train.models.tv-resnet18", {"drop_path_rate": 0.2}))
    assert "train.models.tv-resnet18.drop_path_rate = 0.2" in message
    timm_only = with_change("train.models", {"resnet18": {"drop_path_rate": 0.1}})
    parse_params(timm_only, checks=CHECKS)


def test_model_override_errors_name_the_model():
    message = problems(with_change("train.models.resnet18", {"optimizer": {"lr": -1}}))
    assert "train.models.resnet18.optimizer.lr = -1" in message


@pytest.mark.parametrize(
    ("transform", "expected"),
    [
        (
            {"name": "HorizontalFlop"},
            "'HorizontalFlop' is not an albumentations transform (did you mean HorizontalFlip",
        ),
        ({"name": "Zzzq"}, "'Zzzq' is not an albumentations transform (see albumentations.ai)"),
        ({"name": "HorizontalFlip", "q": 1}, "HorizontalFlip has no argument(s) ['q']"),
        ({"name": "HorizontalFlip", "p": 3}, "HorizontalFlip: p = 3: Input should be less than"),
    ],
)
def test_bad_transform_is_named_with_its_position(transform, expected):
    raw = with_change("train.defaults.augment", {"train": [{"name": "VerticalFlip"}, transform]})
    message = problems(raw)
    assert "train.defaults.augment.train.1" in message
    assert expected in message


def test_every_problem_is_listed_at_once():
    raw = with_change("train.defaults.epochs", 0)
    raw["split"] = {"n_splits": 0}
    message = problems(raw)
    assert "train.defaults.epochs" in message and "split.n_splits" in message


def test_load_params_reports_missing_and_broken_files(tmp_path):
    with pytest.raises(ParamsError, match="not found"):
        load_params(tmp_path / "params.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("train: [unclosed\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(broken)
    empty = tmp_path / "empty.yaml"
    empty.write_text(yaml.safe_dump([1, 2]))
    with pytest.raises(ParamsError, match="expected a mapping"):
        load_params(empty)


def test_a_misspelt_key_suggests_the_nearest_one():
    raw = copy.deepcopy(MINIMAL)
    raw["train"]["defaults"] = {"epoch": 3, "optimizer": {"learning_rate": 0.1}}
    raw["cache"] = {"enable": True}
    raw["train"]["models"]["d2l_resnet11"] = {"batchsize": 8}
    message = problems(raw)
    assert "train.defaults.epoch: unknown key (value 3); did you mean 'epochs'?" in message
    assert "cache.enable: unknown key (value True); did you mean 'enabled'?" in message
    assert "train.defaults.optimizer.learning_rate: unknown key (value 0.1); check" in message


def test_a_model_name_split_at_its_dots_says_which_form_to_use():
    raw = copy.deepcopy(MINIMAL)
    raw["train"]["models"]["convnext_tiny"] = {"fb_in22k": {}}  # what -S makes of the dots
    message = problems(raw)
    assert "train.models.convnext_tiny.fb_in22k: `dvc exp run -S` reads the dots" in message
    assert "-S '+train.models.convnext_tiny_fb_in22k={backbone: convnext_tiny.fb_in22k}'" in message


def test_torchvision_models_take_either_prefix():
    raw = copy.deepcopy(MINIMAL)
    raw["train"]["models"] = {"tv-resnet18": {}, "tv:resnet18": {}}
    assert set(parse_params(raw, checks=CHECKS).train.models) == {"tv-resnet18", "tv:resnet18"}
