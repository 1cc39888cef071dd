"""docker-compose.yml: valid, complete, and the same topology run here with real processes.

No Docker engine runs here, so the topology test starts each service's own ``command`` from
the file as a local process (the simulator, two worker replicas, beat), with the file's
environment and kraken.env.example, against the test Redis, and runs each health check.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import pytest
import redis
import tomllib
import yaml
from tasks_support import REPO, redis_db, wait_for

from kraken.pay import normalize_external_id
from tasks import cli
from tasks.settings import Settings

COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
ENV_EXAMPLE = REPO / "kraken.env.example"
BIN = Path(sys.executable).parent
COMPOSE_DB = 10  # a database of the test Redis for this topology alone


def example_env() -> dict[str, str]:
    """The variables kraken.env.example sets (not the commented-out ones)."""
    pairs = (
        line.split("=", 1)
        for line in ENV_EXAMPLE.read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    )
    return {name.strip(): value.strip() for name, value in pairs}


def documented_variables() -> set[str]:
    """Every variable kraken.env.example names, set or commented out."""
    return set(re.findall(r"^#? ?([A-Z][A-Z0-9_]+)=", ENV_EXAMPLE.read_text(), re.MULTILINE))


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
        assert scripts[program] == "tasks.cli:main"
        assert argv[1] in cli.cli.commands, f"kraken-pay has no command {argv[1]!r}"


def test_the_image_holds_what_pyproject_packages():
    dockerfile = (REPO / "Dockerfile").read_text()
    for path in ("pyproject.toml", "README.md", "celeryconfig.py", "kraken", "tasks"):
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


# ----------------------------------------------------------------------------- the topology


def local_argv(argv: list[str], replace: dict[str, str] | None = None) -> list[str]:
    """A compose command as a local process: this venv's programs, some arguments swapped."""
    replace = replace or {}
    program = sys.executable if argv[0] == "python" else str(BIN / argv[0])
    return [program, *(replace.get(arg, arg) for arg in argv[1:])]


def service_env(name: str, redis_url: str, sim_port: int) -> dict[str, str]:
    """The service's environment as compose gives it, with service hostnames made local."""
    service = SERVICES[name]
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("KRAKEN_", "CELERY_")) and k != "REDIS_URL"
    }
    if "env_file" in service:
        env.update(example_env())
    env.update({k: str(v) for k, v in (service.get("environment") or {}).items()})
    env["REDIS_URL"] = redis_url
    if "KRAKEN_API_URL" in env:
        env["KRAKEN_API_URL"] = f"http://127.0.0.1:{sim_port}"
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"  # celery, kraken-pay
    # Quick retries, so that a fault does not cost the test a production backoff.
    return env | {"KRAKEN_RETRY_BASE_DELAY": "0.01", "KRAKEN_RETRY_MAX_DELAY": "0.5"}


def run_health_check(
    name: str, env: dict[str, str], replace: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """The service's health check, as Docker would run it inside the container."""
    test = SERVICES[name]["healthcheck"]["test"]
    if test[0] == "CMD-SHELL":
        command = test[1].replace("$$", "$")  # compose's escape for a literal $
        for old, new in (replace or {}).items():
            command = command.replace(old, new)
        argv = ["sh", "-c", command]
    else:
        argv = [
            arg.replace("8765", (replace or {}).get("8765", "8765")) for arg in local_argv(test[1:])
        ]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)


@contextlib.contextmanager
def process(argv: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen]:
    """A service's process in its own group; TERM then KILL on the way out."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(15)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def sim_call(port: int, path: str, payload: dict[str, Any] | None = None) -> Any:
    """A control call to the simulator process (GET, or POST with a JSON body)."""
    data = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data)
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())


@dataclass
class Topology:
    redis_url: str
    sim_port: int
    metrics_ports: list[int] = field(default_factory=list)

    def env(self, name: str) -> dict[str, str]:
        return service_env(name, self.redis_url, self.sim_port)

    def healthy(self, name: str, replace: dict[str, str] | None = None, **env: str) -> bool:
        return run_health_check(name, self.env(name) | env, replace).returncode == 0

    def kraken_pay(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "kraken-pay"), *args],
            env=self.env("worker"),
            capture_output=True,
            text=True,
            timeout=60,
        )


@pytest.fixture
def topology(redis_url: str, tmp_path: Path) -> Iterator[Topology]:
    """The simulator, two worker replicas and beat of docker-compose.yml, as local processes."""
    url = redis_db(redis_url, COMPOSE_DB)
    redis.Redis.from_url(url).flushdb()
    up = Topology(url, free_port())
    local = {"0.0.0.0": "127.0.0.1", "8765": str(up.sim_port)}
    starts = [("simulator", local_argv(SERVICES["simulator"]["command"], local))]
    for n in (1, 2):  # two hosts' worth of replicas, each with its own name
        argv = [*local_argv(SERVICES["worker"]["command"]), f"--hostname=celery@replica{n}"]
        starts.append(("worker", argv))
    beat_file = {"--schedule=/tmp/celerybeat-schedule": f"--schedule={tmp_path / 'beat'}"}
    starts.append(("beat", local_argv(SERVICES["beat"]["command"], beat_file)))
    with contextlib.ExitStack() as stack:
        for n, (name, argv) in enumerate(starts):
            env = up.env(name)
            if name == "worker":  # one host here: each replica on a port of its own
                env["KRAKEN_PAY_METRICS_PORT"] = str(free_port())
                up.metrics_ports.append(int(env["KRAKEN_PAY_METRICS_PORT"]))
            stack.enter_context(process(argv, env, tmp_path / f"{n}-{name}.log"))
        yield up
    redis.Redis.from_url(url).flushdb()


def test_the_topology_comes_up_healthy_and_cancels_what_is_queued_or_scheduled(topology):
    port = str(topology.sim_port)
    wait_for(lambda: topology.healthy("simulator", {"8765": port}), 30, "a healthy simulator")
    for n in (1, 2):
        replica = f"replica{n}"
        wait_for(lambda r=replica: topology.healthy("worker", HOSTNAME=r), 60, replica)
    assert not topology.healthy("worker", HOSTNAME="replica3"), "a replica that is not there"
    if shutil.which("redis-cli"):  # the redis image's own tool; absent where fakeredis serves
        address = urlsplit(topology.redis_url)
        local = f"redis-cli -h {address.hostname} -p {address.port}"
        assert topology.healthy("redis", {"redis-cli": local})

    eids = [normalize_external_id(uuid.uuid4()) for _ in range(5)]
    sim_call(topology.sim_port, "/_sim/requests", {"external_ids": eids})
    scheduled = topology.kraken_pay("schedule", eids[4], "--in", "1s")
    completed = topology.kraken_pay("cancel", "--wait", *eids[:4])

    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert [line.split()[1] for line in completed.stdout.splitlines()] == ["cancelled"] * 4
    assert scheduled.returncode == 0, scheduled.stderr

    def state(eid: str) -> str:
        return sim_call(topology.sim_port, f"/_sim/requests?external_id={quote(eid)}")["state"]

    wait_for(lambda: state(eids[4]) == "cancelled", 30, "the scheduled cancellation")
    assert topology.healthy("beat"), "nothing is overdue: beat dispatches"

    from tasks import metrics

    def cancelled_by_replicas() -> float:
        return sum(
            metrics.summed(
                metrics.scrape(f"http://127.0.0.1:{port}/metrics"),
                "kraken_pay_cancellations_total",
                outcome="cancelled",
            )
            for port in topology.metrics_ports
        )

    assert wait_for(lambda: cancelled_by_replicas() == 5, 10, "the replicas' metrics")
