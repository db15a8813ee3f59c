"""dvc.yaml's code deps are derived from the code: each stage lists exactly what it imports.

A stage's deps hold its module plus every project module it imports, directly or through other
project modules (tests/helpers/imports.py reads them with `ast`), with each package
__init__.py that holds code (pipeline/stages/__init__.py), and nothing else from pipeline/.
So editing a module reruns exactly the stages that run it, and no stage goes stale.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from helpers.imports import import_closure, imported_modules
from helpers.processes import REPO_ROOT

STAGES = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())["stages"]


def stage_module(cmd: str) -> Path:
    """The stage module a dvc.yaml cmd runs (`... -m pipeline.stages.<name> ...`)."""
    words = cmd.split()
    return Path(*words[words.index("-m") + 1].split(".")).with_suffix(".py")


def code_deps(stage: dict) -> set[Path]:
    return {Path(dep) for dep in stage.get("deps", []) if str(dep).startswith("pipeline/")}


@pytest.mark.parametrize("name", sorted(STAGES))
def test_stage_deps_are_exactly_its_imports(name):
    stage = STAGES[name]
    module = stage_module(stage["cmd"])
    assert module == Path("pipeline/stages") / f"{name}.py", "one module per stage, named after it"
    imported = import_closure(REPO_ROOT, module)
    listed = code_deps(stage)
    missing, extra = sorted(map(str, imported - listed)), sorted(map(str, listed - imported))
    assert not missing and not extra, (
        f"dvc.yaml stage {name}: missing deps {missing}, extra deps {extra}; "
        "python3 tests/helpers/imports.py rewrites them"
    )


def test_stages_never_import_stages():
    for name, stage in STAGES.items():
        module = stage_module(stage["cmd"])
        stages = {
            f for f in import_closure(REPO_ROOT, module) if f.parts[:2] == ("pipeline", "stages")
        }
        others = stages - {module, Path("pipeline/stages/__init__.py")}
        assert not others, f"stage {name} imports another stage: {sorted(others)}"


def test_schema_imports_nothing_from_the_project():
    """The params schema is split in two (the groups, and one training run's settings); neither
    imports anything else from the project."""
    settings = Path("pipeline/config/model_settings.py")
    assert import_closure(REPO_ROOT, Path("pipeline/config/schema.py")) == {
        Path("pipeline/config/schema.py"),
        settings,
    }
    assert import_closure(REPO_ROOT, settings) == {settings}


def test_no_import_cycles():
    modules = sorted((REPO_ROOT / "pipeline").rglob("*.py"))
    for path in modules:
        relative = path.relative_to(REPO_ROOT)
        for imported in import_closure(REPO_ROOT, relative) - {relative}:
            assert relative not in import_closure(REPO_ROOT, imported), (
                f"import cycle: {relative} and {imported} import each other"
            )


@pytest.mark.parametrize(
    ("edited", "reruns"),
    [
        ("pipeline/training/tta.py", {"train", "pseudo"}),
        ("pipeline/ensemble/scoring.py", {"meta", "ensemble", "pseudo"}),
    ],
)
def test_an_edit_reruns_only_the_stages_that_run_it(edited, reruns):
    """Editing a TTA view reruns train and what follows it; editing scoring reruns meta too."""
    direct = {name for name, stage in STAGES.items() if Path(edited) in code_deps(stage)}
    assert direct == reruns


def test_the_library_is_grouped_by_concern():
    """pipeline/ holds only folders: stages/, tools/ and one folder per concern of the library."""
    flat = sorted(p.name for p in (REPO_ROOT / "pipeline").glob("*.py") if p.name != "__init__.py")
    assert flat == [], f"modules outside a concern's folder: {flat}"


def test_no_module_is_over_300_lines():
    """The library, the benchmarks and the tests alike."""
    sizes = {
        str(path.relative_to(REPO_ROOT)): len(path.read_text(encoding="utf-8").splitlines())
        for folder in ("pipeline", "benchmarks", "tests")
        for path in (REPO_ROOT / folder).rglob("*.py")
    }
    assert {path: lines for path, lines in sizes.items() if lines > 300} == {}


def test_no_test_module_imports_another():
    """What several test modules share lives in tests/helpers/, so each test module stands alone."""
    test_files = sorted((REPO_ROOT / "tests").glob("test_*.py"))
    test_modules = {path.stem for path in test_files}
    importers = {}
    for path in test_files:
        if imported := test_modules & set(imported_modules(path)):
            importers[path.name] = sorted(imported)
    assert importers == {}
