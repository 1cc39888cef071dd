"""What ``kraken-pay`` promises: every failure is one line and an exit status, never a
traceback (each in a fresh process, as a user meets it), and a ``--direct`` cancel spends
the key's shared rate budget, as a worker does, so it cannot push the key over Kraken's
limit while the workers run."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys

import pytest
import redis
import redis.asyncio
from command_support import KRAKEN_PAY, NO_API, clean_env, run
from tasks_support import REPO, unique, wait_for

from kraken.pay import Credentials, RateBudget, RedisNonce
from kraken.pay.simulator import DEMO_API_KEY, DEMO_API_SECRET
from kraken_pay_cli.app import (
    EXIT_CONFIG,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
)
from kraken_pay_cli.cancel import direct_client
from tasks.runtime import build_client, close_client
from tasks.settings import Secret, Settings

EID = "AAAAAAAAAAE"
NOWHERE = "redis://:hunter2@127.0.0.1:1/0"  # nothing listens on port 1
KEY_ID = Credentials(DEMO_API_KEY, DEMO_API_SECRET).key_id
DEMO_KEY = {"KRAKEN_API_KEY": DEMO_API_KEY, "KRAKEN_API_SECRET": DEMO_API_SECRET}


def environment(**variables: str) -> dict[str, str]:
    """The demo key, no Kraken API reachable, and these."""
    return clean_env(**(DEMO_KEY | {"KRAKEN_API_URL": NO_API} | variables))


def kraken_pay(*args: str, **variables: str) -> subprocess.CompletedProcess[str]:
    return run([KRAKEN_PAY, *args], environment(**variables))


def assert_one_line(done: subprocess.CompletedProcess[str], status: int, says: str) -> None:
    assert done.returncode == status, done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert says in lines[0]
    assert "hunter2" not in done.stdout + done.stderr


@pytest.mark.parametrize(
    ("args", "variables", "status", "says"),
    [
        (["cancel", "--wiat", EID], {}, EXIT_USAGE, "No such option '--wiat'"),
        (["cancel", "not base64!"], {}, EXIT_USAGE, "must be base64"),
        (["cancel", EID], {"KRAKEN_TIMEOUT": "soon"}, EXIT_CONFIG, "KRAKEN_TIMEOUT"),
        (["cancel", EID], {"REDIS_URL": NOWHERE}, EXIT_UNREACHABLE, "does not answer"),
        (["bulk-cancel", "/nonexistent/ids.txt"], {}, EXIT_USAGE, "No such file"),
        (["scheduled"], {"REDIS_URL": NOWHERE}, EXIT_UNREACHABLE, "kraken-pay: "),
        (["unschedule", EID], {"REDIS_URL": NOWHERE}, EXIT_UNREACHABLE, "kraken-pay: "),
        (["demo", "--requests", "0"], {}, EXIT_USAGE, "Invalid value for '--requests'"),
        (["check", "--max-skew", "-1"], {}, EXIT_USAGE, "Invalid value for '--max-skew'"),
        (["simulator", "--bogus"], {}, EXIT_USAGE, "unrecognized arguments: --bogus"),
        (["simulator", "--port", "abc"], {}, EXIT_USAGE, "argument --port: invalid int"),
    ],
    ids=lambda value: " ".join(value) if isinstance(value, list) else None,
)
def test_a_failure_is_one_line_and_its_status(args, variables, status, says):
    assert_one_line(kraken_pay(*args, **variables), status, says)


def test_a_direct_cancel_that_cannot_reach_kraken_is_one_line(tasks_redis_url):
    done = kraken_pay(
        "cancel", "--direct", EID, REDIS_URL=tasks_redis_url, KRAKEN_RATE_PER_SECOND="off"
    )
    assert_one_line(done, EXIT_UNREACHABLE, "TransportError: cannot connect")


def test_ctrl_c_while_waiting_is_one_line_and_status_130(broker_url):
    broker = broker_url
    queue = unique("q-nobody")
    proc = subprocess.Popen(
        [KRAKEN_PAY, "cancel", "--wait", "--timeout", "60", "--queue", queue, EID],
        cwd=REPO,
        env=environment(REDIS_URL=broker),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        queued = redis.Redis.from_url(broker)
        wait_for(lambda: queued.llen(queue), 30, "the task on its queue")  # it is waiting now
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        proc.kill()
        proc.wait()
    done = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    assert_one_line(done, EXIT_INTERRUPTED, "kraken-pay: interrupted")


# ----------------------------------------------------------------------------- --direct

DIRECT = """
import sys
from kraken_pay_cli import cli
code = cli.cli.main(["cancel", "--direct", {eid!r}], standalone_mode=False)
tooling = sorted(m for m in sys.modules if m.startswith(("kraken_pay_cli.local", "fakeredis")))
print(code, tooling)
"""


def test_a_direct_cancel_imports_no_local_machinery(sim, tasks_redis_url):
    """A production command: no embedded Redis, no worker launchers in its process."""
    done = subprocess.run(
        [sys.executable, "-c", DIRECT.format(eid=EID)],
        cwd=REPO,
        env=environment(KRAKEN_API_URL=sim.url, REDIS_URL=tasks_redis_url),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "0 []"


def settings_for(redis_url: str, **values: object) -> Settings:
    return Settings(
        api_key=DEMO_API_KEY,
        api_secret=Secret(DEMO_API_SECRET),
        redis_url=redis_url,
        **values,  # type: ignore[arg-type]
    )


async def test_the_direct_client_is_a_workers_with_the_shared_rate_budget(tasks_redis_url):
    settings = settings_for(
        tasks_redis_url,
        rate_capacity=5.0,
        rate_per_second=0.5,
        rate_max_wait=2.0,
        redis_prefix="shop",
    )
    direct, worker = await direct_client(settings), await build_client(settings)
    try:
        assert type(direct) is type(worker)
        budget = direct.rate_budget
        assert isinstance(budget, RateBudget)
        assert (budget.capacity, budget.per_second, budget.max_wait) == (5.0, 0.5, 2.0)
        assert budget.redis_key == worker.rate_budget.redis_key == f"shop:budget:{KEY_ID}"
        assert isinstance(direct.nonce, RedisNonce)
    finally:
        await close_client(direct)
        await close_client(worker)


def test_a_direct_cancel_waits_for_the_budget_the_workers_spent(sim, tasks_redis_url):
    """The workers spent the key's burst: the direct call is refused, not sent to Kraken."""
    url = tasks_redis_url
    budget_key = f"kraken:budget:{KEY_ID}"
    redis.Redis.from_url(url).delete(budget_key)
    budget = {"KRAKEN_RATE_CAPACITY": "2", "KRAKEN_RATE_PER_SECOND": "0.01"}

    async def spend_as_a_worker() -> None:
        client = redis.asyncio.Redis.from_url(url)
        try:
            await RateBudget(client, KEY_ID, capacity=2, per_second=0.01).acquire()
        finally:
            await client.aclose()

    asyncio.run(spend_as_a_worker())
    before = sim.stats()["requests"]
    try:
        done = kraken_pay(
            "cancel", "--direct", EID,
            KRAKEN_API_URL=sim.url, REDIS_URL=url, KRAKEN_RATE_MAX_WAIT="0", **budget,
        )  # fmt: skip
    finally:
        redis.Redis.from_url(url).delete(budget_key)  # the key's budget for the other tests

    assert done.returncode == EXIT_FAILED, done.stdout + done.stderr
    assert done.stdout.startswith(f"{EID}  failed  RateLimited: shared rate budget")
    assert sim.stats()["requests"] == before
