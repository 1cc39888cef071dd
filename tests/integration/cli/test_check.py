"""``kraken-pay check``: it proves the key with a signed call from the workers' nonce sequence,
says whether Redis, the broker, the API, the clock, workers and beat are there and whether
Redis keeps what it holds, never shows a secret, and exits with the status of the worst
finding. Each test runs the command in this process (Click's runner) with exactly the
environment it gives, against the simulator and the test Redis.

What the findings mean without any service: unit/cli/test_check_findings.py.
"""

from __future__ import annotations

import base64
import os
import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from click.testing import CliRunner
from command_support import NO_API
from tasks_support import RABBITMQ_URL, unique, wait_for

from kraken.pay import Credentials, RedisNonce
from kraken.pay.simulator import DEMO_API_KEY, DEMO_API_SECRET
from kraken_pay_cli import cli
from tasks import standalone
from tasks.checks import HEARTBEAT_KEY

SHORT_SECRET = base64.b64encode(b"only 24 bytes of secret").decode()
OTHER_SECRET = base64.b64encode(bytes(range(64))).decode()
NOT_BASE64 = "s3cr3t-value-that-is-not-base64!!"
NOWHERE = "redis://:hunter2@127.0.0.1:1/0"  # nothing listens on port 1
DEMO_KEY = {"KRAKEN_API_KEY": DEMO_API_KEY, "KRAKEN_API_SECRET": DEMO_API_SECRET}


@pytest.fixture(scope="module")
def sim_options() -> dict[str, Any]:
    """The demo key, and a key whose secret is shorter than Kraken's."""
    return {"keys": {DEMO_API_KEY: DEMO_API_SECRET, "short-key": SHORT_SECRET}}


@pytest.fixture
def tasks_url(tasks_redis_url: str) -> str:
    """The workers' Redis, emptied: no nonce drawn before the test."""
    redis.Redis.from_url(tasks_redis_url).flushdb()
    return tasks_redis_url


@pytest.fixture
def check(monkeypatch: pytest.MonkeyPatch, broker_url: str) -> Iterator[Callable[..., Any]]:
    """``check(**env)``: ``kraken-pay check`` in this process with exactly that environment
    (by default: no API, the test broker, a queue no worker consumes)."""

    def run(**env: str):
        for name in list(os.environ):
            if name.startswith(("KRAKEN_", "CELERY_")) or name == "REDIS_URL":
                monkeypatch.delenv(name)
        defaults = {
            "KRAKEN_API_URL": NO_API,
            "CELERY_BROKER_URL": broker_url,
            "KRAKEN_QUEUE": unique("q-check"),
        }
        for name, value in (defaults | env).items():
            monkeypatch.setenv(name, value)
        standalone.reset()  # the command reads its configuration afresh, as a new process
        return CliRunner().invoke(cli.cli, ["check"])

    yield run
    monkeypatch.undo()
    standalone.reset()


def line(output: str, name: str) -> str:
    found = [text for text in output.splitlines() if text[6:].startswith(f"{name} ")]
    assert len(found) == 1, output
    return found[0]


def stored_nonce(url: str) -> int:
    key = f"kraken:nonce:{Credentials(DEMO_API_KEY, DEMO_API_SECRET).key_id}"
    return int(redis.Redis.from_url(url).get(key) or 0)


# ----------------------------------------------------------------------------- the key


def test_a_good_key_is_accepted_with_a_nonce_from_the_workers_sequence(check, sim, tasks_url):
    before = sim.stats()
    result = check(
        KRAKEN_API_URL=sim.url,
        REDIS_URL=tasks_url,
        KRAKEN_API_KEY=DEMO_API_KEY,
        KRAKEN_API_SECRET=DEMO_API_SECRET,
    )
    after = sim.stats()

    assert result.exit_code == 0, result.output
    assert "accepted" in line(result.output, "api")
    assert "'not_found'" in line(result.output, "api")
    assert after["requests"] - before["requests"] == 1  # one signed call, no retry
    assert after["not_found"] - before["not_found"] == 1
    assert after["nonce_rejections"] == before["nonce_rejections"]
    assert stored_nonce(tasks_url) > 0  # drawn from the shared sequence, not a local clock
    assert DEMO_API_SECRET not in result.output


def test_the_check_never_makes_a_workers_next_nonce_stale(check, sim, tasks_url):
    async def draw() -> int:
        import redis.asyncio

        client = redis.asyncio.Redis.from_url(tasks_url)
        try:
            key_id = Credentials(DEMO_API_KEY, DEMO_API_SECRET).key_id
            return await RedisNonce(client, key_id).next()
        finally:
            await client.aclose()

    import asyncio

    first = asyncio.run(draw())
    check(
        KRAKEN_API_URL=sim.url,
        REDIS_URL=tasks_url,
        KRAKEN_API_KEY=DEMO_API_KEY,
        KRAKEN_API_SECRET=DEMO_API_SECRET,
    )
    used_by_check = stored_nonce(tasks_url)
    assert first < used_by_check < asyncio.run(draw())  # a worker's next one is above it


def test_an_unknown_key_is_a_refused_key_with_status_3(check, sim, tasks_url):
    result = check(
        KRAKEN_API_URL=sim.url,
        REDIS_URL=tasks_url,
        KRAKEN_API_KEY="not-a-key-kraken-knows",
        KRAKEN_API_SECRET=DEMO_API_SECRET,
    )
    assert result.exit_code == 3, result.output
    assert line(result.output, "api").startswith("FAIL  api")
    assert "refused key" in line(result.output, "api")
    assert result.output.splitlines()[-1] == "1 problem(s): api"


def test_another_keys_secret_is_a_refused_signature_with_status_3(check, sim, tasks_url):
    result = check(
        KRAKEN_API_URL=sim.url,
        REDIS_URL=tasks_url,
        KRAKEN_API_KEY=DEMO_API_KEY,
        KRAKEN_API_SECRET=OTHER_SECRET,
    )
    assert result.exit_code == 3, result.output
    assert "refused signature: KRAKEN_API_SECRET is not this key's secret" in result.output
    assert OTHER_SECRET not in result.output


def test_a_secret_shorter_than_krakens_is_a_warning_not_a_failure(check, sim, tasks_url):
    result = check(
        KRAKEN_API_URL=sim.url,
        REDIS_URL=tasks_url,
        KRAKEN_API_KEY="short-key",
        KRAKEN_API_SECRET=SHORT_SECRET,
    )
    assert result.exit_code == 0, result.output
    credentials = line(result.output, "credentials")
    assert credentials.startswith("warn")
    assert "decodes to 23 bytes; Kraken's secrets decode to 64" in credentials
    assert "accepted" in line(result.output, "api")


def test_no_redis_means_no_call_at_all(check, sim):
    before = sim.stats()["requests"]
    result = check(
        KRAKEN_API_URL=sim.url,
        REDIS_URL="redis://127.0.0.1:1/0",
        KRAKEN_API_KEY=DEMO_API_KEY,
        KRAKEN_API_SECRET=DEMO_API_SECRET,
    )
    assert result.exit_code == 4
    assert "not called: its nonce must come from the workers' Redis" in result.output
    assert sim.stats()["requests"] == before


# ----------------------------------------------------------------------------- the fleet


def test_no_worker_and_no_beat_are_warnings_and_redis_and_broker_are_named(
    check, sim, tasks_url, broker_url
):
    result = check(
        KRAKEN_API_URL=sim.url,
        REDIS_URL=tasks_url,
        KRAKEN_API_KEY=DEMO_API_KEY,
        KRAKEN_API_SECRET=DEMO_API_SECRET,
        KRAKEN_QUEUE="q-nobody-consumes",
    )
    assert result.exit_code == 0, result.output
    assert line(result.output, "workers").startswith("warn  workers      no worker consumes")
    assert "q-nobody-consumes" in line(result.output, "workers")
    assert "dispatch_due never ran" in line(result.output, "beat")
    assert tasks_url in line(result.output, "redis")
    assert broker_url in line(result.output, "broker")
    assert result.output.splitlines()[-1].startswith("works, ")


def test_a_redis_without_aof_is_a_warning(check, sim, tasks_url):
    client = redis.Redis.from_url(tasks_url)
    if int(client.info("persistence").get("aof_enabled", 0)):
        pytest.skip("this Redis has AOF on")
    result = check(
        KRAKEN_API_URL=sim.url,
        REDIS_URL=tasks_url,
        KRAKEN_API_KEY=DEMO_API_KEY,
        KRAKEN_API_SECRET=DEMO_API_SECRET,
    )
    assert line(result.output, "persistence").startswith("warn  persistence  no AOF")


def test_a_running_worker_and_beats_heartbeat_are_seen(
    check, sim, tasks_url, environment, client, queue, running_worker
):
    with running_worker(environment) as node:
        client.send_task("kraken_pay.dispatch_due", queue=queue)  # as beat would; no result kept
        store = redis.Redis.from_url(tasks_url)
        heartbeat = HEARTBEAT_KEY.format(prefix="kraken")
        wait_for(lambda: store.exists(heartbeat), 30, "the heartbeat")
        result = check(KRAKEN_API_URL=sim.url, REDIS_URL=tasks_url, KRAKEN_QUEUE=queue, **DEMO_KEY)
    assert result.exit_code == 0, result.output
    serving = f"ok    workers      1 consume {queue}: {node.hostname}"
    assert line(result.output, "workers") == serving
    assert line(result.output, "beat").startswith("ok    beat         dispatch_due ran ")


def test_a_worker_warns_at_start_about_a_short_secret(tasks_url, environment, running_worker):
    env = environment | {"KRAKEN_API_KEY": "short-key", "KRAKEN_API_SECRET": SHORT_SECRET}
    with running_worker(env) as node:
        wait_for(lambda: "decodes to 23 bytes" in node.log(), 10, "the warning")
    warning = [text for text in node.log().splitlines() if "decodes to 23 bytes" in text]
    assert warning == [
        "celery worker: warning: KRAKEN_API_SECRET decodes to 23 bytes; Kraken's secrets "
        "decode to 64 (is it cut short, or another service's?)"
    ]
    assert SHORT_SECRET not in node.log()


# ----------------------------------------------------------------------------- what it says


def test_check_passes_when_all_is_well_and_never_prints_the_secret(check, sim, tasks_url):
    result = check(KRAKEN_API_URL=sim.url, REDIS_URL=tasks_url, **DEMO_KEY)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert [line.split()[:2] for line in lines[:5]] == [
        ["ok", "credentials"],
        ["ok", "redis"],
        ["ok", "broker"],
        ["ok", "api"],
        ["ok", "clock"],
    ]
    assert "KRAKEN_API_SECRET decodes to 64 bytes" in lines[0]
    assert "accepted" in lines[3]  # a signed call, answered "not found"
    assert lines[-1] == "all is well" or lines[-1].startswith("works, ")  # warnings: no worker
    assert DEMO_API_SECRET not in result.output


def test_check_reports_missing_credentials_with_status_3(check, sim, tasks_url):
    result = check(KRAKEN_API_URL=sim.url, REDIS_URL=tasks_url)
    assert result.exit_code == 3
    assert "FAIL  credentials  KRAKEN_API_KEY: is not set" in result.stdout
    assert result.stdout.splitlines()[-1] == "1 problem(s): credentials"


def test_check_reports_an_undecodable_secret_without_showing_it(check, sim, tasks_url):
    result = check(
        KRAKEN_API_URL=sim.url,
        REDIS_URL=tasks_url,
        KRAKEN_API_KEY=DEMO_API_KEY,
        KRAKEN_API_SECRET=NOT_BASE64,
    )
    assert result.exit_code == 3
    assert "FAIL  credentials  KRAKEN_API_SECRET: must be the base64 text" in result.stdout
    assert NOT_BASE64 not in result.output


def test_check_reports_what_cannot_be_reached_with_status_4(check):
    # KRAKEN_API_URL: nothing listens
    result = check(REDIS_URL=NOWHERE, CELERY_BROKER_URL=NOWHERE, **DEMO_KEY)
    assert result.exit_code == 4
    failed = [line.split()[1] for line in result.stdout.splitlines() if line.startswith("FAIL")]
    assert failed == ["redis", "broker", "api"]
    assert "clock" not in result.stdout  # no Redis, no clock to compare with
    assert "hunter2" not in result.output


def test_a_configuration_problem_outranks_an_unreachable_service(check):
    result = check(REDIS_URL=NOWHERE)
    assert result.exit_code == 3


def test_check_reaches_a_rabbitmq_broker(check, sim, tasks_url):
    result = check(
        KRAKEN_API_URL=sim.url, REDIS_URL=tasks_url, CELERY_BROKER_URL=RABBITMQ_URL, **DEMO_KEY
    )
    assert result.exit_code == 0, result.output
    assert "ok    broker       amqp://guest:***@127.0.0.1:5672// answers" in result.stdout


def test_check_reports_an_unreachable_rabbitmq(check, sim, tasks_url):
    result = check(
        KRAKEN_API_URL=sim.url,
        REDIS_URL=tasks_url,
        CELERY_BROKER_URL="amqp://guest:guest@127.0.0.1:1//",
        **DEMO_KEY,
    )
    assert result.exit_code == 4
    assert "FAIL  broker       amqp://guest:***@127.0.0.1:1// does not answer" in result.stdout


def test_check_fails_on_clock_skew_with_status_1(check, sim, tasks_url, monkeypatch):
    real_time = time.time
    monkeypatch.setattr(time, "time", lambda: real_time() - 30)  # this host is 30 s late
    result = check(KRAKEN_API_URL=sim.url, REDIS_URL=tasks_url, **DEMO_KEY)
    assert result.exit_code == 1
    assert re.search(r"FAIL  clock        this host is 30\.\d{3}s behind Redis", result.stdout)


def test_check_refuses_a_malformed_setting_with_status_3(check):
    result = check(KRAKEN_TIMEOUT="soon")
    assert result.exit_code == 3
    assert "FAIL  settings     KRAKEN_TIMEOUT: must be a number of seconds" in result.stdout
