"""Stage prepare on empty and degenerate data: it stops, naming the problem, before any training
and before it writes anything."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from helpers import images as imgs

from pipeline.competition.inputs import InputDataError
from pipeline.stages import prepare as prepare_stage

MODEL = "d2l_resnet11"


# ----------------------------------------------------------------------------------------------
# Stage prepare: empty and degenerate data stop it before any training


@pytest.fixture
def comp_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    params = {"data": {"root": "comp"}, "train": {"models": {MODEL: {}}}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    return imgs.write_competition(tmp_path / "comp")


def prepare_fails(*fragments: str) -> str:
    with pytest.raises(InputDataError) as info:
        prepare_stage.main([])
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, message
    assert not Path("data/prepared").exists()
    return message


def test_header_only_train_csv(comp_dir):
    imgs.write_csv(comp_dir.train_csv, ["image", "label"], [])
    prepare_fails("train.csv", "only a header")


def test_header_only_test_csv(comp_dir):
    imgs.write_csv(comp_dir.test_csv, ["image"], [])
    (comp_dir.sample_csv).unlink()
    prepare_fails("test.csv", "only a header")


def test_zero_byte_train_csv(comp_dir):
    comp_dir.train_csv.write_bytes(b"")
    prepare_fails("train.csv", "empty")


def test_one_class(comp_dir):
    rows = [(image, "Acer") for image, _ in comp_dir.train]
    imgs.write_csv(comp_dir.train_csv, ["image", "label"], rows)
    prepare_fails("'Acer'", "at least 2 classes")


def test_labels_differing_only_in_case(comp_dir):
    rows = [(image, "acer" if i == 0 else label) for i, (image, label) in enumerate(comp_dir.train)]
    rows[1] = (rows[1][0], rows[0][1].upper())
    imgs.write_csv(comp_dir.train_csv, ["image", "label"], rows)
    message = prepare_fails("differ only in case")
    assert "'ACER'" in message and "'acer'" in message


def test_data_root_is_a_file(comp_dir, tmp_path):
    params = {"data": {"root": "comp/train.csv"}, "train": {"models": {MODEL: {}}}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    message = prepare_fails("is a file")
    assert "no such folder" not in message


def test_zero_byte_image_says_empty(comp_dir):
    image, _ = comp_dir.train[2]
    (comp_dir.root / image).write_bytes(b"")
    prepare_fails("empty file (0 bytes)")
