"""Scheduled cancellations through a real ``celery beat``, a real worker, Redis and the simulator.

Beat sends ``dispatch_due`` to its default queue, ``celery``; so that no other test's worker
takes those messages, and no other worker claims this module's scheduled ids, the broker and
the workers' REDIS_URL (where the schedule lives) are a database of this module alone,
emptied first.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest
import redis
from tasks_support import Beat, redis_db, wait_for, workers

from kraken.pay import normalize_external_id
from kraken_pay_cli.local import databases
from tasks.ledger import Ledger
from tasks.schedule import schedule_cancel

# The broker and schedule of this module alone (and of test_ledger_redis.py's race).
BEAT_DB = databases.TEST_SCHEDULE
LATE_AT_MOST = 2.0  # seconds after its due time that a scheduled cancellation may happen


@contextlib.contextmanager
def beats(*nodes: Beat) -> Iterator[tuple[Beat, ...]]:
    """Beat processes started (as worker nodes are), once each has sent its first task."""
    with workers(*nodes):  # type: ignore[arg-type]  # a Beat starts and stops as a Worker does
        for node in nodes:
            node.wait_ticking()
        yield nodes


@pytest.fixture(scope="module")
def broker_url(redis_url: str) -> str:
    """Broker, result backend and the workers' Redis (the schedule) of this module alone."""
    url = redis_db(redis_url, BEAT_DB)
    with contextlib.closing(redis.Redis.from_url(url)) as broker:
        broker.flushdb()  # nothing left by an earlier run for beat's queue
    return url


@pytest.fixture(scope="module")
def tasks_redis_url(broker_url: str) -> str:
    return broker_url


@pytest.fixture(scope="module")
def queue() -> str:
    """Where beat sends dispatch_due, and where its bulk goes: the library's own queue."""
    return "kraken_pay"


@pytest.fixture(scope="module")
def store(tasks_redis_url: str) -> Iterator[redis.Redis]:
    """The Redis that holds the schedule, as the workers see it."""
    client = redis.Redis.from_url(tasks_redis_url)
    yield client
    client.close()


@pytest.fixture(autouse=True)
def _empty_schedule(store):
    store.delete(*(store.keys("kraken:ledger:*") or ["-"]))


def beat(env: dict[str, str], log_dir: Path, schedule_file: Path | None = None) -> Beat:
    name = uuid.uuid4().hex[:8]
    return Beat(env, schedule_file or log_dir / f"beat-{name}", log_dir / f"beat-{name}.log")


def schedule_spread(store, sim, count: int, start_in: float, over: float) -> dict[str, float]:
    """Create ``count`` requests and schedule them from ``start_in`` s on, over ``over`` s."""
    ids = [normalize_external_id(uuid.uuid4()) for _ in range(count)]
    sim.create_requests(ids)
    first = time.time() + start_in
    due = {eid: first + over * i / count for i, eid in enumerate(ids)}
    for eid, at in due.items():
        schedule_cancel(eid, at=datetime.fromtimestamp(at, timezone.utc), redis=store)
    return due


def cancelled(sim, due: dict[str, float]) -> dict[str, float]:
    return {eid: at for eid, at in sim.cancelled_at().items() if eid in due}


def assert_on_time(sim, due: dict[str, float]) -> None:
    moments = cancelled(sim, due)
    assert sorted(moments) == sorted(due)
    early = [eid for eid in due if moments[eid] < due[eid]]
    late = max(moments[eid] - due[eid] for eid in due)
    assert early == []
    assert late <= LATE_AT_MOST
    calls = [sim.request(eid)["cancel_calls"] for eid in due]
    assert calls == [1] * len(due)


def test_1000_scheduled_ids_are_cancelled_within_2s_of_their_due_time_none_early(
    sim, store, environment, log_dir, worker
):
    with beats(beat(environment, log_dir)):
        due = schedule_spread(store, sim, 1000, start_in=2.0, over=5.0)
        wait_for(lambda: len(cancelled(sim, due)) == 1000, 30, "1000 cancellations")
    assert_on_time(sim, due)
    ledger = Ledger(store)
    wait_for(lambda: ledger.open_count() == 0, 30, "every entry closed")  # after its chunk
    assert store.zcard(ledger.due_key) == 0


def test_killing_beat_mid_run_and_starting_it_again_loses_no_id(
    sim, store, environment, log_dir, worker
):
    schedule_file = log_dir / "beat-restarted"
    due = schedule_spread(store, sim, 600, start_in=1.0, over=6.0)
    with beats(beat(environment, log_dir, schedule_file)) as (first,):
        wait_for(lambda: len(cancelled(sim, due)) >= 100, 30, "the first cancellations")
        first.kill()
    dead_at = time.time()
    # Beat stays dead for a while on purpose, so that ids fall due with no one to send them.
    wait_for(lambda: time.time() > dead_at + 1.5, 5, "ids falling due while beat is dead")
    missed = [eid for eid, at in due.items() if at < time.time() and eid not in cancelled(sim, due)]
    with beats(beat(environment, log_dir, schedule_file)):
        wait_for(lambda: len(cancelled(sim, due)) == 600, 60, "600 cancellations")
    assert missed  # some ids fell due while beat was dead, and were not lost
    moments = cancelled(sim, due)
    assert all(moments[eid] >= due[eid] for eid in due)
    assert [sim.request(eid)["cancel_calls"] for eid in due] == [1] * 600


def test_two_beats_by_mistake_cancel_each_id_once(sim, store, environment, log_dir, worker):
    with beats(beat(environment, log_dir), beat(environment, log_dir)):
        due = schedule_spread(store, sim, 300, start_in=1.0, over=3.0)
        wait_for(lambda: len(cancelled(sim, due)) == 300, 30, "300 cancellations")
    moments = cancelled(sim, due)
    assert all(moments[eid] >= due[eid] for eid in due)
    assert [sim.request(eid)["cancel_calls"] for eid in due] == [1] * 300
