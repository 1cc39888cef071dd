"""The topology of docker-compose.yml run here with real processes.

No Docker engine runs here, so the test starts each service's own ``command`` from the file
as a local process (the simulator, two worker replicas, beat), with the file's environment
and kraken.env.example, against the test Redis, and runs each health check.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
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
from command_support import clean_env
from compose_support import SERVICES, example_env
from tasks_support import redis_db, wait_for

from kraken.pay import normalize_external_id
from kraken_pay_cli.local import databases, free_port

BIN = Path(sys.executable).parent
COMPOSE_DB = databases.TEST_COMPOSE  # a database of the test Redis for this topology alone


def local_argv(argv: list[str], replace: dict[str, str] | None = None) -> list[str]:
    """A compose command as a local process: this venv's programs, some arguments swapped."""
    replace = replace or {}
    program = sys.executable if argv[0] == "python" else str(BIN / argv[0])
    return [program, *(replace.get(arg, arg) for arg in argv[1:])]


def service_env(name: str, redis_url: str, sim_port: int) -> dict[str, str]:
    """The service's environment as compose gives it, with service hostnames made local."""
    service = SERVICES[name]
    env = clean_env()
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
