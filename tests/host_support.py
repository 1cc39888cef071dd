"""The example projects, run as their users run them: shared by the tests of tests/test_host_*.py.

``pytest_plugins`` in tests/conftest.py registers the fixtures: ``sim`` (the simulator, in the
test process), ``project`` (each example in turn), ``env`` (the project's environment, its own
SHOP_* settings only), ``worker`` (the project's ``celery worker``). ``drive`` runs the project's
web side once (tests/hosts/driver.py); ``Node`` is a ``celery worker|beat`` of the project.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from tasks_support import CELERY, REPO, redis_db, unique, wait_for

from kraken.pay.simulator import DEMO_API_KEY, DEMO_API_SECRET, SimulatorThread

__all__ = ["DRIVER", "PROJECTS", "Node", "Project", "drive", "env", "project", "sim", "worker"]

DRIVER = Path(__file__).with_name("hosts") / "driver.py"
PROJECT_BROKER_DB, PROJECT_BACKEND_DB, LIBRARY_DB = 10, 11, 9


@dataclass(frozen=True)
class Project:
    kind: str  # the driver's name for it
    directory: Path
    celery_app: str  # what -A names


PROJECTS = {
    "django": Project("django", REPO / "examples" / "django_app", "shop"),
    "flask": Project("flask", REPO / "examples" / "flask_app", "make_celery"),
}


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatorThread]:
    with SimulatorThread(keys={DEMO_API_KEY: DEMO_API_SECRET}, nonce_window=0) as simulator:
        yield simulator


@pytest.fixture(scope="module", params=sorted(PROJECTS))
def project(request) -> Project:
    return PROJECTS[request.param]


@pytest.fixture(scope="module")
def env(project, sim, redis_url, tmp_path_factory) -> dict[str, str]:
    """The project's environment: its own settings only, nothing of the library's key."""
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("KRAKEN_", "CELERY_", "SHOP_", "DJANGO_")) and k != "REDIS_URL"
    }
    for db in (PROJECT_BROKER_DB, PROJECT_BACKEND_DB, LIBRARY_DB):
        redis.Redis.from_url(redis_db(redis_url, db)).flushdb()
    data = tmp_path_factory.mktemp(f"{project.kind}-data")
    return base | {
        "SHOP_BROKER_URL": redis_db(redis_url, PROJECT_BROKER_DB),
        "SHOP_RESULT_BACKEND": redis_db(redis_url, PROJECT_BACKEND_DB),
        "SHOP_REDIS_URL": redis_db(redis_url, LIBRARY_DB),
        "SHOP_KRAKEN_API_KEY": DEMO_API_KEY,
        "SHOP_KRAKEN_API_SECRET": DEMO_API_SECRET,
        "SHOP_KRAKEN_API_URL": sim.url,
        "SHOP_SIMULATOR_URL": sim.url,
        "SHOP_KRAKEN_JWKS_URL": sim.jwks_url,
        "SHOP_DATABASE": str(data / "shop.sqlite3"),
        "SHOP_PAYMENT_EXPIRY": "1800",
        # Tuning the project left out falls back to the library's variables, key by key.
        "KRAKEN_TIMEOUT": "2",
        "KRAKEN_RETRY_BASE_DELAY": "0.01",
        "KRAKEN_RETRY_MAX_DELAY": "0.5",
        "KRAKEN_RATE_PER_SECOND": "off",
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": str(REPO),
    }


def drive(project: Project, env: dict[str, str], *args: str, **overrides: str) -> dict:
    """Run the project's web side once; its JSON answer."""
    done = subprocess.run(
        [sys.executable, str(DRIVER), project.kind, *args],
        cwd=project.directory,
        env=env | overrides,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


class Node:
    """``celery -A <project> worker|beat`` in its own process group, logging to a file."""

    def __init__(self, project: Project, env: dict[str, str], log_dir: Path, *args: str) -> None:
        self.name = unique(args[0])
        self.log_path = log_dir / f"{self.name}.log"
        command = [CELERY, "-A", project.celery_app, *args, "--loglevel", "INFO"]
        if args[0] == "worker":
            command += ["-n", f"{self.name}@tests", "--without-gossip", "--without-mingle"]
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                command,
                cwd=project.directory,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def pool_pids(self) -> list[int]:
        path = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        return [int(pid) for pid in path.read_text().split()]

    def stop(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, sig)
                try:
                    self.proc.wait(15)
                except subprocess.TimeoutExpired:
                    continue
        if self.proc.poll() is None:
            self.proc.wait(10)


@pytest.fixture(scope="module")
def worker(project, env, tmp_path_factory) -> Iterator[Node]:
    """The project's worker, serving its own queue and the library's."""
    logs = tmp_path_factory.mktemp(f"{project.kind}-logs")
    node = Node(project, env, logs, "worker", "-Q", "celery,kraken_pay", "-c", "2")
    try:
        wait_for(lambda: "ready." in node.log() or node.proc.poll() is not None, 60, "worker")
        assert node.proc.poll() is None, node.log()[-3000:]
        yield node
    finally:
        node.stop()
