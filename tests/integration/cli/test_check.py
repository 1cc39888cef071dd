"""``kraken-pay check`` proves the key with a signed call from the workers' nonce sequence,
and says whether workers and beat run and whether Redis keeps what it holds."""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator

import pytest
import redis
from click.testing import CliRunner
from tasks_support import (
    BROKER_DB,
    TASKS_DB,
    Worker,
    client_app,
    redis_db,
    unique,
    wait_for,
    worker_env,
    workers,
)

from kraken.pay import Credentials, RedisNonce
from kraken.pay.errors import KrakenError, parse_response
from kraken.pay.simulator import DEMO_API_KEY, DEMO_API_SECRET, SimulatorThread
from tasks import checks, cli, standalone
from tasks.celery import app

SHORT_SECRET = base64.b64encode(b"only 24 bytes of secret").decode()
OTHER_SECRET = base64.b64encode(bytes(range(64))).decode()


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatorThread]:
    keys = {DEMO_API_KEY: DEMO_API_SECRET, "short-key": SHORT_SECRET}
    with SimulatorThread(keys=keys, nonce_window=0) as simulator:
        yield simulator


@pytest.fixture
def tasks_url(redis_url: str) -> str:
    url = redis_db(redis_url, TASKS_DB)
    redis.Redis.from_url(url).flushdb()
    return url


@pytest.fixture
def check(monkeypatch, redis_url):
    """``check(**env)``: ``kraken-pay check`` in this process with exactly that environment
    (the broker on the test Redis, a queue no worker consumes unless the test says so)."""

    def run(**env: str):
        for name in list(os.environ):
            if name.startswith(("KRAKEN_", "CELERY_")) or name == "REDIS_URL":
                monkeypatch.delenv(name)
        defaults = {
            "CELERY_BROKER_URL": redis_db(redis_url, BROKER_DB),
            "KRAKEN_QUEUE": unique("q-check"),
        }
        for name, value in (defaults | env).items():
            monkeypatch.setenv(name, value)
        standalone.reset()
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


@pytest.mark.parametrize(
    ("error", "says"),
    [
        ("EGeneral:Permission denied", "permission: the key lacks 'Funds permissions - Query'"),
        ("EAPI:Feature disabled", "permission: Kraken Pay is disabled"),
        ("EAPI:Invalid key", "refused key"),
        ("EAPI:Invalid signature", "refused signature"),
    ],
)
def test_each_authentication_error_names_what_to_fix(error, says):
    with pytest.raises(KrakenError) as caught:
        parse_response(200, f'{{"error": ["{error}"]}}'.encode(), {})
    finding = checks._refusal("https://api.kraken.com", caught.value)
    assert finding.failure == 3
    assert says in finding.detail


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
    check, sim, tasks_url, redis_url
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
    assert redis_db(redis_url, BROKER_DB) in line(result.output, "broker")
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


class FakeInfo:
    def __init__(self, aof: int, policy: str) -> None:
        self.sections = {
            "persistence": {"aof_enabled": aof},
            "memory": {"maxmemory_policy": policy},
        }

    def info(self, section: str) -> dict:
        return self.sections[section]


def test_allkeys_eviction_is_a_warning_and_aof_with_noeviction_is_fine():
    evicting = checks.check_redis_safety(FakeInfo(1, "allkeys-lru"))
    assert [(f.name, f.warning) for f in evicting] == [("persistence", False), ("eviction", True)]
    assert "allkeys-lru may evict" in evicting[1].detail
    safe = checks.check_redis_safety(FakeInfo(1, "noeviction"))
    assert not any(f.warning for f in safe)


def test_every_command_notes_the_default_redis(monkeypatch, capsys):
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.setattr(cli, "_noted", set())
    standalone.reset()
    try:
        cli._settings()
        cli._settings()
    finally:
        monkeypatch.undo()
        standalone.reset()
    err = capsys.readouterr().err.splitlines()
    assert err == ["kraken-pay: note: REDIS_URL is not set; using redis://127.0.0.1:6379/0"]


def test_the_exit_statuses_are_the_commands():
    assert (checks.EXIT_FAILED, checks.EXIT_CONFIG, checks.EXIT_UNREACHABLE) == (
        cli.EXIT_FAILED,
        cli.EXIT_CONFIG,
        cli.EXIT_UNREACHABLE,
    )


@pytest.mark.slow
def test_a_running_worker_and_beats_heartbeat_are_seen(check, sim, tasks_url, redis_url, tmp_path):
    queue = unique("q-check-worker")
    broker = redis_db(redis_url, BROKER_DB)
    env = worker_env(sim_url=sim.url, redis_url=tasks_url, broker_url=broker)
    node = Worker(env | {"KRAKEN_API_SECRET": DEMO_API_SECRET}, queue, tmp_path)
    with (
        client_app(app, broker_url=broker, result_backend=broker, task_default_queue=queue) as c,
        workers(node),
    ):
        node.wait_ready(c)
        c.send_task("kraken_pay.dispatch_due", queue=queue)  # as beat would; no result kept
        store = redis.Redis.from_url(tasks_url)
        heartbeat = checks.HEARTBEAT_KEY.format(prefix="kraken")
        wait_for(lambda: store.exists(heartbeat), 30, "the heartbeat")
        result = check(
            KRAKEN_API_URL=sim.url,
            REDIS_URL=tasks_url,
            CELERY_BROKER_URL=broker,
            KRAKEN_API_KEY=DEMO_API_KEY,
            KRAKEN_API_SECRET=DEMO_API_SECRET,
            KRAKEN_QUEUE=queue,
        )
    assert result.exit_code == 0, result.output
    serving = f"ok    workers      1 consume {queue}: {node.hostname}"
    assert line(result.output, "workers") == serving
    assert line(result.output, "beat").startswith("ok    beat         dispatch_due ran ")


@pytest.mark.slow
def test_a_worker_warns_at_start_about_a_short_secret(sim, tasks_url, redis_url, tmp_path):
    queue = unique("q-short")
    broker = redis_db(redis_url, BROKER_DB)
    env = worker_env(sim_url=sim.url, redis_url=tasks_url, broker_url=broker)
    env |= {"KRAKEN_API_KEY": "short-key", "KRAKEN_API_SECRET": SHORT_SECRET}
    node = Worker(env, queue, tmp_path)
    with (
        client_app(app, broker_url=broker, result_backend=broker, task_default_queue=queue) as c,
        workers(node),
    ):
        node.wait_ready(c)
        wait_for(lambda: "decodes to 23 bytes" in node.log(), 10, "the warning")
    warning = [text for text in node.log().splitlines() if "decodes to 23 bytes" in text]
    assert warning == [
        "celery worker: warning: KRAKEN_API_SECRET decodes to 23 bytes; Kraken's secrets "
        "decode to 64 (is it cut short, or another service's?)"
    ]
    assert SHORT_SECRET not in node.log()
