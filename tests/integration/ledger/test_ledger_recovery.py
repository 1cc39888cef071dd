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
from tasks_support import Beat, Worker, client_app, unique, wait_for

from kraken.pay import normalize_external_id
from kraken.pay.simulator import SimulatorThread
from tasks import cancel_request
from tasks.celery import app
from tasks.ledger import Ledger, override

DEAD_BROKER = "redis://127.0.0.1:1/0"


@pytest.fixture(scope="module")
def environment(environment: dict[str, str], queue: str) -> dict[str, str]:
    """Beat relays to the module's queue, every half second, what has waited its 5 s grace."""
    relay = {"KRAKEN_QUEUE": queue, "KRAKEN_LEDGER_GRACE": "5", "KRAKEN_SCHEDULE_INTERVAL": "0.5"}
    return environment | relay


@pytest.fixture
def ledger(tasks_redis_url: str) -> Iterator[Ledger]:
    """The test process records in the workers' Redis, as a web process of theirs would."""
    store = redis.Redis.from_url(tasks_redis_url)
    store.delete("kraken:ledger:open", "kraken:ledger:due")
    real = Ledger(store)
    override(app, real)
    yield real
    override(app, None)


@pytest.fixture
def fleet(environment: dict[str, str], running_worker: Any, tmp_path: Path) -> Any:
    """``with fleet(env, **worker) as node``: a worker node and beat, beat started once the
    worker is ready; ``env`` is the module's environment unless given."""

    @contextlib.contextmanager
    def start(env: dict[str, str] | None = None, **worker: Any) -> Iterator[Worker]:
        env = environment if env is None else env
        beat = Beat(env, tmp_path / "schedule", tmp_path / "beat.log")
        with running_worker(env, **worker) as node:
            beat.start()
            try:
                yield node
            finally:
                beat.stop()

    return start


def new_request(sim: SimulatorThread) -> str:
    eid = normalize_external_id(uuid.uuid4())
    sim.create_requests([eid])
    return eid


def cancelled(sim: SimulatorThread, eid: str) -> bool:
    return sim.request(eid)["state"] == "cancelled"


def test_a_publish_that_fails_after_the_ledger_took_it_is_sent_by_beat(
    sim, ledger, client, broker_url, fleet
):
    eid = new_request(sim)
    with client_app(app, broker_url=DEAD_BROKER, result_backend=broker_url):
        result = cancel_request.apply_async((eid,), retry=False)  # returns: it is recorded
    assert ledger.entry(eid).task_id == result.id
    with fleet() as node:
        outcome = AsyncResult(result.id, app=client).get(timeout=60)  # the same task id
    assert outcome["outcome"] == "cancelled"
    assert cancelled(sim, eid)
    wait_for(lambda: ledger.closed(eid), 10, "the entry closed")
    assert "relay sent" in node.log()


def test_a_cancellation_whose_message_never_arrived_is_sent_after_its_grace(sim, ledger, fleet):
    eid = new_request(sim)
    ledger.ask([eid], within=1.0, task_id=unique("lost"))  # recorded; the web process died
    with fleet():
        wait_for(lambda: cancelled(sim, eid), 30, "the lost cancellation")
        wait_for(lambda: ledger.closed(eid), 10, "the entry closed")
    assert ledger.open_count() == 0


def test_a_node_paused_past_its_soft_time_limit_mid_call_ends_cancelled(
    sim, ledger, environment, fleet
):
    eid = new_request(sim)
    paused_env = environment | {
        "KRAKEN_TIMEOUT": "1",
        "KRAKEN_SOFT_TIME_LIMIT": "3",
        "KRAKEN_TIME_LIMIT": "6",
    }
    with fleet(paused_env, concurrency=1) as node:
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
