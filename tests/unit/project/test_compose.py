"""docker-compose.yml and kraken.env.example: valid, complete, and every command they run is
the project's. The same topology run with real processes: integration/project/
test_compose_topology.py."""

from __future__ import annotations

import re
import shlex
from typing import Any

import pytest
import tomllib
from compose_support import SERVICES, documented_variables, example_env
from tasks_support import REPO

from kraken_pay_cli import cli
from tasks.settings import Settings


class RecordingEnv(dict):
    """An empty environment that remembers which variables were asked for."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: set[str] = set()

    def get(self, name: str, default: Any = None) -> Any:
        self.asked.add(name)
        return super().get(name, default)


# ----------------------------------------------------------------------------- the file


def test_the_five_services_of_the_topology():
    assert set(SERVICES) == {"redis", "simulator", "worker", "beat", "flower"}
    assert SERVICES["redis"]["image"].startswith("redis:7")


def test_flower_reads_the_broker_the_workers_use_and_they_send_it_events():
    flower = SERVICES["flower"]
    assert flower["image"].startswith("mher/flower:")
    assert "--broker=redis://redis:6379/0" in flower["command"]
    assert flower["command"][-2:] == ["flower", "--port=5555"]
    assert flower["ports"] == ["127.0.0.1:5555:5555"]
    assert flower["depends_on"]["redis"]["condition"] == "service_healthy"
    import celeryconfig

    assert celeryconfig.worker_send_task_events is True
    assert celeryconfig.task_send_sent_event is True


def test_each_worker_replica_serves_its_metrics():
    worker = SERVICES["worker"]
    assert worker["environment"]["KRAKEN_PAY_METRICS_PORT"] == "9808"
    assert worker["expose"] == ["9808"]


@pytest.mark.parametrize("name", ["redis", "simulator", "worker", "beat", "flower"])
def test_every_service_has_a_health_check(name):
    test = SERVICES[name]["healthcheck"]["test"]
    assert test[0] in ("CMD", "CMD-SHELL") and len(test) > 1


def test_two_worker_replicas():
    assert SERVICES["worker"]["deploy"]["replicas"] == 2


def test_the_worker_waits_for_healthy_redis_and_simulator():
    depends = SERVICES["worker"]["depends_on"]
    assert depends["redis"]["condition"] == "service_healthy"
    assert depends["simulator"]["condition"] == "service_healthy"


def test_worker_and_beat_share_kraken_env_and_the_redis_service():
    for name in ("worker", "beat"):
        assert SERVICES[name]["env_file"] == "kraken.env"
        assert SERVICES[name]["environment"]["REDIS_URL"] == "redis://redis:6379/0"
        assert SERVICES[name]["depends_on"]["redis"]["condition"] == "service_healthy"


def commands() -> list[tuple[str, list[str]]]:
    """(service, argv) for every command and health check the project's image runs."""
    found = []
    for name, service in SERVICES.items():
        if "build" in service:
            found.append((name, service["command"]))
        test = service["healthcheck"]["test"]
        argv = shlex.split(test[1]) if test[0] == "CMD-SHELL" else test[1:]
        if "build" in service:  # redis-cli and wget come with the redis and flower images
            found.append((name, argv))
    return found


@pytest.mark.parametrize(("service", "argv"), commands())
def test_every_command_exists_in_the_project(service, argv):
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    program = argv[0]
    if program == "python":
        if argv[1] == "-m":
            module = argv[2]
            assert (REPO / module.replace(".", "/") / "__main__.py").exists(), module
        else:
            assert argv[1] == "-c"
    elif program == "celery":
        assert argv[1:3] == ["-A", "tasks"]
        from tasks.celery import app

        assert app.main == "kraken_pay"
        assert argv[3] in ("worker", "beat", "inspect")
    else:
        assert program in scripts, f"{service}: {program} is not a console script"
        assert scripts[program] == "kraken_pay_cli:main"
        assert argv[1] in cli.cli.commands, f"kraken-pay has no command {argv[1]!r}"


def test_the_image_holds_what_pyproject_packages():
    dockerfile = (REPO / "Dockerfile").read_text()
    packaged = ("kraken", "tasks", "kraken_pay_cli")
    for path in ("pyproject.toml", "README.md", "celeryconfig.py", *packaged):
        assert re.search(rf"^COPY .*\b{re.escape(path)}\b", dockerfile, re.MULTILINE), path
    assert "pip install --no-deps ." in dockerfile
    assert "pip install -r requirements/lock.txt" in dockerfile


def test_the_secret_file_stays_out_of_the_image_and_out_of_git():
    assert "kraken.env" in (REPO / ".dockerignore").read_text().split()
    assert "kraken.env" in (REPO / ".gitignore").read_text().split()


def test_kraken_env_example_documents_every_setting():
    env = RecordingEnv()
    Settings.from_env(env)
    assert env.asked, "Settings read nothing?"
    assert env.asked <= documented_variables()


def test_kraken_env_example_names_only_variables_the_project_reads():
    sources = "".join(
        path.read_text()
        for pattern in ("kraken/**/*.py", "tasks/**/*.py", "celeryconfig.py")
        for path in REPO.glob(pattern)
    )
    for name in documented_variables():
        assert f'"{name}"' in sources, f"{name} is read nowhere"


def test_kraken_env_example_is_a_working_configuration():
    settings = Settings.from_env(example_env())
    settings.credentials()  # decodes
    assert settings.api_url == "http://simulator:8765"
