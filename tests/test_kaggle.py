"""`pipeline.tools.kaggle` against a fake `kaggle` executable on PATH: no network."""

from __future__ import annotations

import json
import subprocess
import zipfile
from pathlib import Path

import pytest
import yaml
from helpers.projects import install_fake_kaggle, write_prepared_project

from pipeline.competition import kaggle_api
from pipeline.competition.submission import SubmissionError, submission_record
from pipeline.config.params import parse_params
from pipeline.io.console import PipelineError
from pipeline.tools import kaggle

# Records its arguments; `competitions download` writes <competition>.zip into -p, as kaggle does.
FAKE_KAGGLE = """#!{python}
import json, os, sys, zipfile
from pathlib import Path

log = Path(os.environ["FAKE_KAGGLE_LOG"])
calls = json.loads(log.read_text()) if log.exists() else []
log.write_text(json.dumps(calls + [sys.argv[1:]]))
args = sys.argv[1:]
if args[:2] == ["competitions", "download"]:
    folder = Path(args[args.index("-p") + 1])
    with zipfile.ZipFile(folder / (args[args.index("-c") + 1] + ".zip"), "w") as archive:
        archive.writestr("train.csv", "image,label\\nimages/0.jpg,acer\\n")
        archive.writestr("images/0.jpg", b"jpeg bytes")
sys.exit(int(os.environ.get("FAKE_KAGGLE_EXIT", "0")))
"""


@pytest.fixture
def fake_kaggle(tmp_path, monkeypatch) -> Path:
    """A fake `kaggle` first on PATH, credentials in the environment, cwd in tmp_path.

    Returns the log file, a JSON list of the fake's argument lists.
    """
    log = install_fake_kaggle(tmp_path, monkeypatch, FAKE_KAGGLE)
    monkeypatch.chdir(tmp_path)
    return log


def calls(log: Path) -> list[list[str]]:
    return json.loads(log.read_text()) if log.exists() else []


def test_download_unzips_into_dest_and_leaves_nothing_else(fake_kaggle, tmp_path):
    kaggle.main(["download"])
    dest = tmp_path / "data" / "classify-leaves"
    assert (dest / "train.csv").read_text().startswith("image,label")
    assert (dest / "images" / "0.jpg").read_bytes() == b"jpeg bytes"
    assert [p.name for p in (tmp_path / "data").iterdir()] == ["classify-leaves"]
    [call] = calls(fake_kaggle)
    assert call[:4] == ["competitions", "download", "-c", "classify-leaves"]
    assert call[4] == "-p" and (tmp_path / call[5]).parent == tmp_path / "data"


def test_download_keeps_an_existing_dest_unless_forced(fake_kaggle, tmp_path):
    dest = tmp_path / "mine"
    dest.mkdir()
    (dest / "keep.txt").write_text("mine")
    with pytest.raises(PipelineError, match="already exists.*--force"):
        kaggle.main(["download", "--competition", "other", "--dest", "mine"])
    assert calls(fake_kaggle) == [] and (dest / "keep.txt").exists()
    kaggle.main(["download", "--competition", "other", "--dest", "mine", "--force"])
    assert sorted(p.name for p in dest.iterdir()) == ["images", "train.csv"]
    assert calls(fake_kaggle)[0][3] == "other"


def test_missing_kaggle_command_says_how_to_install(fake_kaggle, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(PipelineError, match="pip install kaggle"):
        kaggle.main(["download"])
    assert not (tmp_path / "data").exists()


def test_missing_credentials_name_both_ways_to_give_them(fake_kaggle, tmp_path, monkeypatch):
    monkeypatch.delenv("KAGGLE_KEY")
    with pytest.raises(PipelineError, match=r"kaggle\.json.*KAGGLE_USERNAME and\s+KAGGLE_KEY"):
        kaggle.main(["download"])
    assert calls(fake_kaggle) == []
    token = tmp_path / "home" / ".kaggle" / "kaggle.json"
    token.parent.mkdir(parents=True)
    token.write_text('{"username": "leaf", "key": "secret"}')
    assert kaggle_api.credentials_problem() is None


def test_a_failing_kaggle_is_one_error(fake_kaggle, monkeypatch):
    monkeypatch.setenv("FAKE_KAGGLE_EXIT", "1")
    with pytest.raises(PipelineError, match="competitions download -c classify-leaves.*rules"):
        kaggle.main(["download"])


def git(*args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


CLASSES = ["acer", "quercus"]
TEST_IMAGES = ["images/9.jpg", "images/10.jpg"]


def write_submission(
    root: Path,
    params: dict,
    rows: list[tuple[str, str]],
    record=True,
    data_root: str = "data/classify-leaves",
    header: str = "image,label",
    accuracies: dict | None = None,
) -> Path:
    """Prepared data, params.yaml (with `data_root`), and submissions/submission.csv with stage
    submit's record."""
    params["data"]["root"] = data_root
    write_prepared_project(root, CLASSES, TEST_IMAGES)
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    csv = root / "submissions" / "submission.csv"
    csv.parent.mkdir(exist_ok=True)
    csv.write_text(f"{header}\n" + "".join(f"{image},{label}\n" for image, label in rows))
    if record:
        made_with = parse_params(params)
        accuracies = accuracies or {"oof_accuracy": 0.75, "oof_accuracy_fitted_cross": 0.625}
        data = submission_record(
            made_with, Path("submissions/submission.csv"), Path("e"), accuracies
        )
        (root / "submissions" / "submission.json").write_text(json.dumps(data))
    return csv


VALID = [("images/9.jpg", "acer"), ("images/10.jpg", "quercus")]


def test_submit_describes_commit_and_the_params_it_was_made_with(
    fake_kaggle, tmp_path, tiny_params
):
    tiny_params["train"]["models"]["resnet10t"] = {"epochs": 3}
    write_submission(tmp_path, tiny_params, VALID)
    git("init", "-q")
    git("add", "params.yaml")
    git("commit", "-qm", "init")

    kaggle.main(["submit", "-m", "first try"])
    [call] = calls(fake_kaggle)
    assert call[:6] == [
        "competitions",
        "submit",
        "-c",
        "classify-leaves",
        "-f",
        str(Path("submissions/submission.csv")),
    ]
    message = call[call.index("-m") + 1]
    commit = git("rev-parse", "--short", "HEAD")
    assert message.startswith(f"first try | git {commit} | models d2l_resnet11, resnet10t")
    assert "folds 0,1" in message and "image_size 32" in message
    assert "epochs d2l_resnet11=1, resnet10t=3" in message
    assert message.endswith("| OOF acc 0.7500 (0.6250 cross-fitted)")

    # params.yaml edited since: the message still describes the run the file was made with.
    tiny_params["train"]["defaults"]["epochs"] = 9
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny_params))
    kaggle.main(["submit"])
    message = calls(fake_kaggle)[1][-1]
    assert f"git {commit}-dirty |" in message
    assert "epochs d2l_resnet11=1, resnet10t=3" in message


@pytest.mark.parametrize(
    "rows, expected",
    [
        (VALID[::-1], "rows differ from test.csv's order"),
        ([("images/9.jpg", "acer"), ("images/10.jpg", "pinus")], "'pinus' is not a training"),
        (VALID[:1], "1 rows, test.csv has 2"),
    ],
    ids=["reversed", "unknown label", "missing row"],
)
def test_submit_refuses_an_invalid_file_before_kaggle_runs(
    fake_kaggle, tmp_path, tiny_params, rows, expected
):
    write_submission(tmp_path, tiny_params, rows)
    with pytest.raises(SubmissionError, match=f"(?s)not submitted: .*{expected}"):
        kaggle.main(["submit"])
    assert calls(fake_kaggle) == []


@pytest.mark.parametrize(
    ("equal", "expected"),
    [
        (0.95, "| OOF acc 0.9833 fitted on its one fold (0.9500 with equal weights)"),
        (0.9833, "| OOF acc 0.9833"),  # equal weights: nothing was fitted
    ],
)
def test_a_one_fold_run_is_described_by_its_equal_figure_too(
    fake_kaggle, tmp_path, tiny_params, equal, expected
):
    accuracies = {"oof_accuracy": 0.9833, "oof_accuracy_fitted_cross": None}
    accuracies["oof_accuracy_equal"] = equal
    write_submission(tmp_path, tiny_params, VALID, accuracies=accuracies)
    kaggle.main(["submit"])
    assert calls(fake_kaggle)[0][-1].endswith(expected)


def test_submit_checks_the_header_its_record_names(fake_kaggle, tmp_path, tiny_params):
    tiny_params["data"]["submission_columns"] = ["id", "category"]
    write_submission(tmp_path, tiny_params, VALID, header="id,category")
    del tiny_params["data"]["submission_columns"]  # params.yaml edited since the run
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny_params))
    kaggle.main(["submit"])
    assert len(calls(fake_kaggle)) == 1

    record = tmp_path / "submissions" / "submission.json"
    older = json.loads(record.read_text())
    del older["data"]["submission_columns"]  # a record from before the key
    record.write_text(json.dumps(older))
    with pytest.raises(SubmissionError, match="expected \\['image', 'label'\\]"):
        kaggle.main(["submit"])
    assert len(calls(fake_kaggle)) == 1


def test_submit_refuses_the_synthetic_data_and_warns_of_another_folder(
    fake_kaggle, tmp_path, tiny_params, capsys, monkeypatch
):
    write_submission(tmp_path, tiny_params, VALID, data_root="data/synthetic")
    with pytest.raises(PipelineError, match="not submitted: .* data.root = data/synthetic, the "):
        kaggle.main(["submit"])
    (tmp_path / "absolute").mkdir()
    monkeypatch.chdir(tmp_path / "absolute")
    written_otherwise = str(tmp_path / "absolute" / "data" / "." / "synthetic")
    write_submission(tmp_path / "absolute", tiny_params, VALID, data_root=written_otherwise)
    with pytest.raises(PipelineError, match="not submitted: .*, the synthetic leaves"):
        kaggle.main(["submit"])
    assert calls(fake_kaggle) == []

    for data_root, warned in (("data/leaves", True), ("data/classify-leaves", False)):
        (tmp_path / data_root).mkdir(parents=True)
        monkeypatch.chdir(tmp_path / data_root)
        write_submission(tmp_path / data_root, tiny_params, VALID, data_root=data_root)
        kaggle.main(["submit"])
        warning = f"warning: the submission was made from data.root = {data_root}"
        assert (warning in capsys.readouterr().err) == warned
    assert len(calls(fake_kaggle)) == 2


def test_a_file_stage_submit_did_not_write_is_checked_and_flagged(
    fake_kaggle, tmp_path, tiny_params, capsys
):
    csv = write_submission(tmp_path, tiny_params, VALID)
    csv.write_text(csv.read_text() + "\n")  # changed since the record: not what was recorded
    kaggle.main(["submit"])
    assert "does not describe" in capsys.readouterr().err
    assert "params unknown" in calls(fake_kaggle)[0][-1]


def test_submit_needs_the_file(fake_kaggle):
    with pytest.raises(PipelineError, match="submissions/submission.csv: no such file"):
        kaggle.main(["submit"])
    assert calls(fake_kaggle) == []


def test_download_zip_members_cannot_escape_dest(tmp_path):
    archive = tmp_path / "downloaded" / "evil.zip"
    archive.parent.mkdir()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("../../outside.txt", "x")
        zf.writestr("/abs.txt", "y")
    out = tmp_path / "out"
    out.mkdir()
    kaggle.unpack(archive.parent, out)
    assert not (tmp_path / "outside.txt").exists()
    assert sorted(p.name for p in out.rglob("*.txt")) == ["abs.txt", "outside.txt"]


def test_download_dvc_adds_the_folder_inside_a_dvc_project(fake_kaggle, tmp_path, capsys):
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run(["dvc", "init", "-q"], cwd=tmp_path, check=True)
    kaggle.main(["download"])
    assert (tmp_path / "data" / "classify-leaves.dvc").is_file()
    assert "/classify-leaves" in (tmp_path / "data" / ".gitignore").read_text()
    out = capsys.readouterr().out
    assert "dvc: added data/classify-leaves" in out and "git add data/classify-leaves.dvc" in out


def test_no_dvc_add_skips_it_and_outside_dvc_it_says_so(fake_kaggle, tmp_path, capsys):
    kaggle.main(["download"])
    assert "not inside a DVC project" in capsys.readouterr().out
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run(["dvc", "init", "-q"], cwd=tmp_path, check=True)
    kaggle.main(["download", "--competition", "other", "--no-dvc-add"])
    assert not (tmp_path / "data" / "other.dvc").exists()
    assert "dvc:" not in capsys.readouterr().out
