"""pipeline.io.files: an atomic write that fails leaves nothing behind, not even the folders it
made, and git ignores one in progress; `remove_empty_folders` deletes empty folders only."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from helpers.processes import REPO_ROOT

from pipeline.io.files import atomic_path, remove_empty_folders


def test_a_failed_atomic_write_removes_the_folders_it_created(tmp_path):
    target = tmp_path / "models" / "resnet18" / "fold0"
    with pytest.raises(RuntimeError), atomic_path(target) as out:
        out.mkdir()
        raise RuntimeError("training failed")
    assert list(tmp_path.iterdir()) == []


def test_a_failed_atomic_write_keeps_folders_that_were_there_or_got_content(tmp_path):
    (tmp_path / "models").mkdir()
    target = tmp_path / "models" / "resnet18" / "fold0"
    with pytest.raises(RuntimeError), atomic_path(target) as out:
        out.write_text("x")
        (target.parent / "other.txt").write_text("written beside it meanwhile")
        raise RuntimeError("training failed")
    assert sorted(p.name for p in (tmp_path / "models" / "resnet18").iterdir()) == ["other.txt"]


def test_a_successful_atomic_write_keeps_its_folders(tmp_path):
    target = tmp_path / "models" / "resnet18" / "fold0"
    with atomic_path(target) as out:
        out.mkdir()
    assert target.is_dir()


def test_remove_empty_folders_removes_only_empty_ones_innermost_first(tmp_path):
    (tmp_path / "models" / "resnet18" / "fold0").mkdir(parents=True)
    (tmp_path / "models" / "slim" / "fold1").mkdir(parents=True)
    (tmp_path / "models" / "slim" / "fold1" / "best.pt").write_bytes(b"weights")
    (tmp_path / "models" / "slim" / "fold2").mkdir()
    removed = remove_empty_folders(tmp_path / "models")
    assert {p.relative_to(tmp_path).as_posix() for p in removed} == {
        "models/resnet18/fold0",
        "models/resnet18",
        "models/slim/fold2",
    }
    assert (tmp_path / "models" / "slim" / "fold1" / "best.pt").is_file()
    assert (tmp_path / "models").is_dir()


def test_remove_empty_folders_of_a_missing_root_does_nothing(tmp_path):
    assert remove_empty_folders(tmp_path / "absent") == []


def test_a_write_removes_what_a_killed_write_of_the_same_path_left(tmp_path):
    # A SIGKILL skips atomic_path's cleanup: stage generate left data/.synthetic.<random>.tmp/.
    (tmp_path / ".synthetic.k1ll3d.tmp").mkdir()
    (tmp_path / ".synthetic.k1ll3d.tmp" / "0.jpg").write_bytes(b"half an image")
    (tmp_path / ".synthetic.0ther.tmp").write_bytes(b"a file")
    (tmp_path / ".synthetic2.k1ll3d.tmp").mkdir()  # another output's: not this write's to remove
    with atomic_path(tmp_path / "synthetic") as out:
        out.mkdir()
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        ".synthetic2.k1ll3d.tmp",
        "synthetic",
    ]


def git_ignores(repo: Path, path: Path) -> bool:
    """What the repo's .gitignore says of `path` (the machine's own global ignores left out)."""
    check = ["git", "-c", "core.excludesFile=", "check-ignore", "-q", str(path.relative_to(repo))]
    return subprocess.run(check, cwd=repo).returncode == 0


def test_git_ignores_an_output_while_it_is_written_and_not_once_it_is_in_place(tmp_path):
    """Inside `dvc exp run`, dvclive git-adds the untracked files of its folder as a cell ends,
    while that folder is still atomic_path's temporary. Were it not ignored, a dvc killed or
    hung up then left those files staged in git's index under a name that no longer exists."""
    shutil.copy(REPO_ROOT / ".gitignore", tmp_path / ".gitignore")
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    target = tmp_path / "results" / "train" / "d2l_resnet11_slim" / "fold0"
    with atomic_path(target) as out:
        out.mkdir()
        (out / "metrics.json").write_text("{}")
        assert git_ignores(tmp_path, out / "metrics.json")
    assert not git_ignores(tmp_path, target / "metrics.json")
