"""The locks: every dependency of pyproject.toml pinned, in versions its bounds allow, and
used by the Docker image and by `make test`."""

from __future__ import annotations

import re
from importlib import metadata

import pytest
import tomllib
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from tasks_support import REPO

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;]+)(?:\s*;\s*(.+))?$")


def pins(name: str) -> dict[str, tuple[str, str | None]]:
    """``{package: (version, marker)}`` of ``requirements/<name>``; every line is ``==``."""
    found = {}
    for line in (REPO / "requirements" / name).read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = _PIN.match(line.strip())
        assert match, f"{name}: not an exact pin: {line!r}"
        found[canonicalize_name(match[1])] = (match[2], match[3])
    return found


def requirements(*extras: str) -> list[Requirement]:
    listed = list(PYPROJECT["project"]["dependencies"])
    for extra in extras:
        listed += PYPROJECT["project"]["optional-dependencies"][extra]
    return [Requirement(text) for text in listed]


@pytest.mark.parametrize(("lock", "extras"), [("lock.txt", ()), ("test-lock.txt", ("test",))])
def test_each_direct_dependency_is_pinned_within_its_bounds(lock, extras):
    pinned = pins(lock)
    for requirement in requirements(*extras):
        name = canonicalize_name(requirement.name)
        assert name in pinned, f"{lock} lacks {requirement.name}"
        assert requirement.specifier.contains(pinned[name][0], prereleases=True), (
            f"{lock}: {name}=={pinned[name][0]} breaks {requirement}"
        )


def test_every_dependency_has_an_upper_bound():
    build = [Requirement(text) for text in PYPROJECT["build-system"]["requires"]]
    for requirement in [*requirements("test"), *build]:
        assert any(spec.operator in ("<", "<=", "==", "~=") for spec in requirement.specifier), (
            f"{requirement} has no upper bound"
        )


def test_the_test_lock_holds_the_runtime_locks_versions():
    runtime, test = pins("lock.txt"), pins("test-lock.txt")
    assert {name: test[name][0] for name in runtime} == {n: v for n, (v, _) in runtime.items()}


def _closure(requirement: Requirement, seen: set[str]) -> None:
    """``requirement`` and everything it needs here (extras and markers evaluated)."""
    name = canonicalize_name(requirement.name)
    key = name + "".join(f"[{extra}]" for extra in sorted(requirement.extras))
    if key in seen:
        return
    seen.add(key)
    for text in metadata.requires(requirement.name) or []:
        needed = Requirement(text)
        environments = [default_environment() | {"extra": e} for e in requirement.extras or {""}]
        if needed.marker is None or any(needed.marker.evaluate(env) for env in environments):
            _closure(needed, seen)


def test_the_test_lock_covers_everything_the_project_needs_here_and_this_venv_is_it():
    seen: set[str] = set()
    _closure(Requirement("kraken-pay-cancel[test]"), seen)
    needed = {key.split("[")[0] for key in seen} - {"kraken-pay-cancel"}
    pinned = pins("test-lock.txt")
    assert needed - set(pinned) == set()
    installed = {name: metadata.version(name) for name in needed}
    assert {name: pinned[name][0] for name in needed} == installed


def test_the_image_and_make_test_install_the_locks():
    dockerfile = (REPO / "Dockerfile").read_text()
    assert "COPY requirements/lock.txt" in dockerfile
    assert "pip install -r requirements/lock.txt" in dockerfile
    makefile = (REPO / "Makefile").read_text()
    assert "pip install --quiet -r requirements/test-lock.txt" in makefile
    assert "pip install --quiet --no-deps -e ." in makefile
