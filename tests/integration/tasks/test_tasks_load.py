"""Two worker nodes, each with concurrency 2, cancel 1,000 requests while 10% of calls fail."""

from __future__ import annotations

import uuid
from collections import Counter

from celery.result import ResultSet
from tasks_support import Worker, workers

from kraken.pay import normalize_external_id
from kraken.pay.simulator import FAULT_KINDS
from tasks import cancel_request

N = 1000
FAULT_RATE = 0.10
# Each kind is drawn in turn, so this per-kind rate makes 10% of calls meet some fault.
PER_KIND = 1 - (1 - FAULT_RATE) ** (1 / len(FAULT_KINDS))


def test_1000_cancellations_with_10_percent_faults_all_end_cancelled(
    sim, client, environment, queue, log_dir
):
    nodes = [Worker(environment, queue, log_dir, pool="prefork", concurrency=2) for _ in range(2)]
    ids = [normalize_external_id(uuid.uuid4()) for _ in range(N)]
    sim.create_requests(ids)
    faults = {kind: {"rate": PER_KIND} for kind in FAULT_KINDS}
    faults["delay"]["seconds"] = 1.5  # past KRAKEN_TIMEOUT=1

    with workers(*nodes):
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
