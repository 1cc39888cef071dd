"""``kraken`` is shared with python-kraken-sdk: both install side by side, in either order, and
uninstalling one leaves the other working.

Regular (non-editable) installs into throwaway virtual environments, as a user's would be.
The project is built once as a wheel; the SDK comes from the package index. Skipped, with the
reason, only where no package index answers.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest
from tasks_support import REPO

SDK = "python-kraken-sdk"
OURS = "kraken-pay-cancel"
BOTH = "import kraken.spot, kraken.futures; from kraken.pay import KrakenPayClient; import tasks"
ONLY_OURS = (
    "from kraken.pay import KrakenPayClient; import tasks, importlib.util as u; "
    "assert u.find_spec('kraken.spot') is None; assert u.find_spec('celeryconfig') is None"
)
ONLY_SDK = "import kraken.spot, importlib.util as u; assert u.find_spec('kraken.pay') is None"


def _run(command: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, cwd=cwd, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL
    )


def _pip(python: Path, *args: str) -> None:
    done = _run([str(python), "-m", "pip", "--disable-pip-version-check", "-q", *args], Path("/"))
    if done.returncode != 0:
        unreachable = ("Could not find a version", "No matching distribution", "connection")
        if any(sign in done.stderr for sign in unreachable):
            pytest.skip(f"no package index answers: {done.stderr.strip().splitlines()[-1]}")
        raise AssertionError(done.stderr[-3000:])


def _imports(python: Path, code: str, cwd: Path) -> None:
    done = _run([str(python), "-c", code], cwd)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The project's wheel, built from a copy of its files (no stale build/ directory)."""
    source, out = tmp_path_factory.mktemp("source"), tmp_path_factory.mktemp("wheel")
    listed = _run(["git", "ls-files", "-co", "--exclude-standard", "-z"], REPO).stdout
    for name in filter(None, listed.split("\0")):
        if (REPO / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, source / name)
    _pip(Path(sys.executable), "wheel", "--no-deps", "-w", str(out), str(source))
    (built,) = out.glob("kraken_pay_cancel-*.whl")
    return built


def _fresh_env(path: Path) -> Path:
    venv.create(path, with_pip=True)
    return path / "bin" / "python"


@pytest.mark.parametrize("first", ["ours", "sdk"])
def test_both_install_side_by_side_and_either_survives_the_others_removal(first, wheel, tmp_path):
    python = _fresh_env(tmp_path / "env")
    packages = {"ours": str(wheel), "sdk": SDK}
    for name in (first, "sdk" if first == "ours" else "ours"):
        _pip(python, "install", packages[name])
    outside = tmp_path  # not the repository, whose kraken/ would shadow the installed one
    _imports(python, BOTH, outside)

    removed = OURS if first == "sdk" else SDK
    _pip(python, "uninstall", "-y", removed)
    _imports(python, ONLY_SDK if removed == OURS else ONLY_OURS, outside)
