"""The environment is the one requirements.lock pins (docs/environment.md).

The committed dvc.lock and results/ were made with these exact versions, and the suite is known
to pass with them; a stale or hand-upgraded virtualenv fails here instead of passing silently.
"""

import tomllib
from importlib import metadata

from helpers.processes import REPO_ROOT
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

LOCK = REPO_ROOT / "requirements.lock"
INSTALL = 'python3 -m pip install -c requirements.lock -e ".[test]"'


def locked_requirements() -> list[Requirement]:
    lines = LOCK.read_text(encoding="utf-8").splitlines()
    return [Requirement(line) for line in lines if line.strip() and not line.startswith("#")]


def pinned_version(requirement: Requirement) -> str:
    (spec,) = requirement.specifier
    assert spec.operator == "==", f"requirements.lock: {requirement} is not an exact pin"
    return spec.version


def installed_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def project_requirements() -> list[Requirement]:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    declared = project["dependencies"] + project["optional-dependencies"]["test"]
    return [Requirement(line) for line in declared]


def test_installed_packages_are_the_locked_versions():
    stale = []
    for requirement in locked_requirements():
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue  # another platform's package
        pinned = pinned_version(requirement)
        installed = installed_version(requirement.name)
        if installed != pinned:
            found = installed or "nothing"
            stale.append(f"  {requirement.name}: installed {found}, locked {pinned}")
    assert not stale, (
        f"this environment differs from requirements.lock; reinstall with `{INSTALL}`, or move "
        "the lock forward with `.ci/relock` (docs/environment.md):\n" + "\n".join(stale)
    )


def test_the_lock_pins_every_declared_dependency_within_its_range():
    locked = {canonicalize_name(r.name): pinned_version(r) for r in locked_requirements()}
    problems = []
    for requirement in project_requirements():
        version = locked.get(canonicalize_name(requirement.name))
        if version is None:
            problems.append(f"  {requirement.name}: declared in pyproject.toml, not locked")
        elif not requirement.specifier.contains(version, prereleases=True):
            problems.append(f"  {requirement.name}: locked {version}, declared {requirement}")
    assert not problems, (
        "requirements.lock is behind pyproject.toml; re-resolve it with `.ci/relock`:\n"
        + "\n".join(problems)
    )


def test_the_stale_check_names_the_package_and_both_versions(monkeypatch):
    monkeypatch.setattr(metadata, "version", lambda name: "0.0.1")
    try:
        test_installed_packages_are_the_locked_versions()
    except AssertionError as error:
        message = str(error)
    else:
        raise AssertionError("a stale environment passed the check")
    torch_pin = next(pinned_version(r) for r in locked_requirements() if r.name == "torch")
    assert f"torch: installed 0.0.1, locked {torch_pin}" in message
    assert INSTALL in message
