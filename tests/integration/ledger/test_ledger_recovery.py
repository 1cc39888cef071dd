"""Nothing asked for is lost: the ledger and beat's relay, with real workers, beat and Redis.

Each test loses a cancellation on the way, as production would, and finds it cancelled in
the simulator: a publish that fails after the ledger took it, a message that never reached
the broker, a node paused past its soft time limit mid-call.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from celery.result import AsyncResult
from tasks_support import (
    BROKER_DB,
    TASKS_DB,
    Beat,
    Worker,
    client_app,
    redis_db,
    unique,
    wait_for,
    worker_env,
    workers,
)

from kraken.pay import normalize_external_id
from kraken.pay.simulator import DEMO_API_KEY, DEMO_API_SECRET, SimulatorThread
from tasks import cancel_request
from tasks.celery import app
from tasks.ledger import Ledger, override

pytestmark = pytest.mark.slow

DEAD_BROKER = "redis://127.0.0.1:1/0"


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatorThread]:
    with SimulatorThread(keys={DEMO_API_KEY: DEMO_API_SECRET}, nonce_window=0) as simulator:
        yield simulator


@pytest.fixture
def urls(redis_url) -> dict[str, str]:
    urls = {"broker": redis_db(redis_url, BROKER_DB), "tasks": redis_db(redis_url, TASKS_DB)}
    redis.Redis.from_url(urls["tasks"]).delete("kraken:ledger:open", "kraken:ledger:due")
    return urls


@pytest.fixture
def ledger(urls) -> Iterator[Ledger]:
    """The test process records in the workers' Redis, as a web process of theirs would."""
    real = Ledger(redis.Redis.from_url(urls["tasks"]))
    override(app, real)
    yield real
    override(app, None)


@pytest.fixture
def queue() -> str:
    return unique("q-ledger")


@pytest.fixture
def env(sim, urls, queue) -> dict[str, str]:
    return worker_env(
        sim_url=sim.url,
        redis_url=urls["tasks"],
        broker_url=urls["broker"],
        KRAKEN_QUEUE=queue,
        KRAKEN_LEDGER_GRACE="5",
        KRAKEN_SCHEDULE_INTERVAL="0.5",
    )


@contextlib.contextmanager
def fleet(env: dict[str, str], queue: str, urls: dict[str, str], logs: Path, **worker: Any):
    """One worker node and beat on the test broker; yields the worker once it is ready."""
    node = Worker(env, queue, logs, **worker)
    beat = Beat(env, logs / "schedule", logs / "beat.log")
    conf = {"broker_url": urls["broker"], "result_backend": urls["broker"]}
    with client_app(app, task_default_queue=queue, **conf) as client, workers(node):
        node.wait_ready(client)
        beat.start()
        try:
            yield client, node
        finally:
            beat.stop()


def new_request(sim: SimulatorThread) -> str:
    eid = normalize_external_id(uuid.uuid4())
    sim.create_requests([eid])
    return eid


def cancelled(sim: SimulatorThread, eid: str) -> bool:
    return sim.request(eid)["state"] == "cancelled"


def test_a_publish_that_fails_after_the_ledger_took_it_is_sent_by_beat(
    sim, urls, ledger, queue, env, tmp_path
):
    eid = new_request(sim)
    with client_app(app, broker_url=DEAD_BROKER, result_backend=urls["broker"]):
        result = cancel_request.apply_async((eid,), retry=False)  # returns: it is recorded
    assert ledger.entry(eid).task_id == result.id
    with fleet(env, queue, urls, tmp_path) as (client, node):
        outcome = AsyncResult(result.id, app=client).get(timeout=60)  # the same task id
    assert outcome["outcome"] == "cancelled"
    assert cancelled(sim, eid)
    wait_for(lambda: ledger.closed(eid), 10, "the entry closed")
    assert "relay sent" in node.log()


def test_a_cancellation_whose_message_never_arrived_is_sent_after_its_grace(
    sim, urls, ledger, queue, env, tmp_path
):
    eid = new_request(sim)
    ledger.ask([eid], within=1.0, task_id=unique("lost"))  # recorded; the web process died
    with fleet(env, queue, urls, tmp_path):
        wait_for(lambda: cancelled(sim, eid), 30, "the lost cancellation")
        wait_for(lambda: ledger.closed(eid), 10, "the entry closed")
    assert ledger.open_count() == 0


def test_a_node_paused_past_its_soft_time_limit_mid_call_ends_cancelled(
    sim, urls, ledger, queue, env, tmp_path
):
    eid = new_request(sim)
    paused_env = env | {
        "KRAKEN_TIMEOUT": "1",
        "KRAKEN_SOFT_TIME_LIMIT": "3",
        "KRAKEN_TIME_LIMIT": "6",
    }
    with fleet(paused_env, queue, urls, tmp_path, concurrency=1) as (_, node):
        try:
            before = sim.stats()["faults_injected"]["delay"]
            sim.set_faults({"delay": {"next": 1, "seconds": 2.0}})
            cancel_request.apply_async((eid,))
            wait_for(lambda: sim.stats()["faults_injected"]["delay"] > before, 20, "the call")
            os.killpg(node.proc.pid, signal.SIGSTOP)  # a VM freeze, `docker pause`
            time.sleep(5.0)  # the pause itself, longer than the soft limit: not a wait
            os.killpg(node.proc.pid, signal.SIGCONT)
            wait_for(lambda: cancelled(sim, eid), 60, "the cancellation after the pause")
            wait_for(lambda: ledger.closed(eid), 30, "the entry closed")
            node.check_alive()
        finally:
            sim.clear_faults()
