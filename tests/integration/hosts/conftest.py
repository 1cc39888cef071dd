"""The example projects' fixtures: each project in turn, its environment, its own worker.

Every test of this folder runs once per example (``examples/django_app``, ``examples/flask_app``):
one contract, written once. The project's processes are its own (``celery -A <project>``, its
web side through driver.py), configured from its settings (``SHOP_*``), with the module's
simulator as Kraken.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tasks_support import PROJECTS, Node, Project, project_env, wait_for

from kraken.pay.simulator import SimulatorThread


@pytest.fixture(scope="module", params=sorted(PROJECTS))
def project(request: pytest.FixtureRequest) -> Project:
    return PROJECTS[request.param]


@pytest.fixture(scope="module")
def env(
    project: Project,
    sim: SimulatorThread,
    redis_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, str]:
    """The project's environment: its broker, backend and the library's store flushed, the
    simulator as Kraken and as the issuer of the notifications' keys."""
    data: Path = tmp_path_factory.mktemp(f"{project.kind}-data")
    return project_env(sim.url, redis_url, data, SHOP_KRAKEN_JWKS_URL=sim.jwks_url)


@pytest.fixture(scope="module")
def project_worker(
    project: Project, env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Node]:
    """The project's worker, serving its own queue and the library's."""
    logs = tmp_path_factory.mktemp(f"{project.kind}-logs")
    node = Node(project, env, logs, "worker", "-Q", "celery,kraken_pay", "-c", "2")
    try:
        wait_for(lambda: "ready." in node.log() or node.proc.poll() is not None, 60, "worker")
        assert node.proc.poll() is None, node.log()[-3000:]
        yield node
    finally:
        node.stop()
