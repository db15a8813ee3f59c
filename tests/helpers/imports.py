"""The project's Python files a module imports, directly or through other project modules.

Read from the source with `ast`, so what dvc.yaml lists as a stage's code can be checked
against what the stage really runs (tests/test_dvc_deps.py).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = "pipeline"


def module_file(root: Path, module: str) -> Path | None:
    """The file of a dotted project module (a package's __init__.py), or None."""
    path = root.joinpath(*module.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_modules(path: Path) -> list[str]:
    """Every absolute module name `path` imports, anywhere in its body (lazy imports too).

    `from a import b` gives `a` and `a.b`: `b` may name a module.
    """
    modules = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            modules += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules += [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
    return modules


def runs_code(file: Path) -> bool:
    """False for an empty package __init__.py, which importing its package runs to no effect."""
    return file.name != "__init__.py" or file.stat().st_size > 0


def package_inits(root: Path, path: Path) -> set[Path]:
    """The __init__.py files Python runs before `path`: those of the packages holding it."""
    inits = {folder / "__init__.py" for folder in path.parents if folder.is_relative_to(root)}
    return {init for init in inits if init != path and init.is_file() and runs_code(init)}


def direct_imports(root: Path, path: Path) -> set[Path]:
    """The project files `path` imports itself, anywhere in its body (lazy imports too), and
    the package __init__.py files that run first."""
    found = package_inits(root, path)
    for module in imported_modules(path):
        if module == PACKAGE or module.startswith(PACKAGE + "."):
            file = module_file(root, module)
            if file is not None and runs_code(file):
                found.add(file)  # its packages' __init__.py: when import_closure visits it
    return found


def import_closure(root: Path, path: Path) -> set[Path]:
    """`path` and every project file it imports, transitively, relative to `root`."""
    seen, todo = set(), [root / path]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        todo.extend(direct_imports(root, current) - seen)
    return {file.relative_to(root) for file in seen}


CODE_DEP = re.compile(r"^(\s+)- pipeline/\S+\.py\s*$")
STAGE = re.compile(r"^  ([\w-]+):\s*$")


def sync_dvc_yaml(root: Path) -> str:
    """dvc.yaml with each stage's run of `pipeline/...py` deps replaced by its import closure.

    The stage's own module comes first, then the rest in path order; everything else in the
    file (comments, data deps, params) is left as it is.
    """
    out, stage, lines = [], None, (root / "dvc.yaml").read_text().splitlines()
    index = 0
    while index < len(lines):
        line = lines[index]
        stage = (STAGE.match(line) or [None, stage])[1]
        match = CODE_DEP.match(line)
        if not match:
            out.append(line)
            index += 1
            continue
        while index < len(lines) and CODE_DEP.match(lines[index]):
            index += 1
        module = Path("pipeline/stages") / f"{stage}.py"
        rest = sorted(import_closure(root, module) - {module})
        out += [f"{match[1]}- {path}" for path in [module, *rest]]
    return "\n".join(out) + "\n"


if __name__ == "__main__":  # python3 tests/helpers/imports.py: rewrite dvc.yaml's code deps
    project = Path(__file__).resolve().parents[2]
    (project / "dvc.yaml").write_text(sync_dvc_yaml(project))
