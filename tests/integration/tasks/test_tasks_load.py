"""Two worker nodes, each with concurrency 2, cancel 1,000 requests while 10% of calls fail."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator

import pytest
from celery.result import ResultSet
from tasks_support import (
    BROKER_DB,
    TASKS_DB,
    Worker,
    client_app,
    redis_db,
    unique,
    worker_env,
    workers,
)

from kraken.pay import normalize_external_id
from kraken.pay.simulator import DEMO_API_KEY, DEMO_API_SECRET, FAULT_KINDS, SimulatorThread
from tasks import cancel_request
from tasks.celery import app

N = 1000
FAULT_RATE = 0.10
# Each kind is drawn in turn, so this per-kind rate makes 10% of calls meet some fault.
PER_KIND = 1 - (1 - FAULT_RATE) ** (1 / len(FAULT_KINDS))


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatorThread]:
    with SimulatorThread(
        keys={DEMO_API_KEY: DEMO_API_SECRET}, nonce_window=0, seed=20261124
    ) as simulator:
        yield simulator


def test_1000_cancellations_with_10_percent_faults_all_end_cancelled(sim, redis_url, tmp_path):
    broker_url = redis_db(redis_url, BROKER_DB)
    queue = unique("q-load")
    env = worker_env(
        sim_url=sim.url, redis_url=redis_db(redis_url, TASKS_DB), broker_url=broker_url
    )
    nodes = [Worker(env, queue, tmp_path, pool="prefork", concurrency=2) for _ in range(2)]
    ids = [normalize_external_id(uuid.uuid4()) for _ in range(N)]
    sim.create_requests(ids)
    faults = {kind: {"rate": PER_KIND} for kind in FAULT_KINDS}
    faults["delay"]["seconds"] = 1.5  # past KRAKEN_TIMEOUT=1

    with (
        client_app(
            app, broker_url=broker_url, result_backend=broker_url, task_default_queue=queue
        ) as client,
        workers(*nodes),
    ):
        for node in nodes:
            node.wait_ready(client)
        before = sim.stats()
        sim.set_faults(faults)
        results = ResultSet([cancel_request.delay(eid) for eid in ids])
        outcomes = results.join(timeout=240, propagate=False)
        sim.clear_faults()
        after = sim.stats()

    failed = [r for r in outcomes if not isinstance(r, dict)]
    assert failed == []
    assert Counter(r["outcome"] for r in outcomes) == {"cancelled": N}
    assert sim.summary()["by_state"].get("cancelled") == N
    assert after["cancels_applied"] - before["cancels_applied"] == N

    injected = sum(after["faults_injected"].values()) - sum(before["faults_injected"].values())
    calls = after["requests"] - before["requests"]
    assert 0.05 * calls < injected < 0.15 * calls
    # Serial ordering: Kraken never refuses one of our nonces, except for a call that we had
    # already given up on (it met the delay fault, timed out and was retried with a fresh
    # nonce) and that lands late.
    late_calls = after["faults_injected"]["delay"] - before["faults_injected"]["delay"]
    assert after["nonce_rejections"] - before["nonce_rejections"] <= late_calls
    assert sum(r["attempts"] for r in outcomes) == calls
