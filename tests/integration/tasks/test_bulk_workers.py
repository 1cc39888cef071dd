"""bulk_cancel through real workers, a real Redis broker and the simulator.

One prefork worker (concurrency 2, the budget off, chunks of 500) serves the module; the
budget test starts its own, against a simulator with a rate limit, with a tight budget and a
short visibility timeout, so that its chunks must pause and continue in a retry of themselves.
"""

from __future__ import annotations

import uuid

import pytest
from tasks_support import unique, wait_for

from kraken.pay import normalize_external_id
from kraken.pay.simulator import SimulatorThread
from tasks import bulk_cancel

# Faults that hit 10% of calls, each kind as often; all are retried by the chunk or, after
# three in a row, by a cancel_request it hands the id to.
FAULTS_10_PERCENT = {
    "reset_before": {"rate": 0.02},
    "reset_after": {"rate": 0.02},  # cancels, then drops the answer: ambiguous
    "http_5xx": {"rate": 0.02, "status": 520},
    "malformed_json": {"rate": 0.02},  # cancels, then garbles the answer: ambiguous
    "service_unavailable": {"rate": 0.02},
}


def new_ids(n: int) -> list[str]:
    return [normalize_external_id(uuid.uuid4()) for _ in range(n)]


@pytest.fixture(scope="module")
def environment(environment: dict[str, str]) -> dict[str, str]:
    """The module's worker cancels in chunks of 500."""
    return environment | {"KRAKEN_BULK_CHUNK": "500"}


def test_the_summary_counts_outcomes_and_reports_bad_ids_by_position(sim, worker):
    pending, paid, done = new_ids(3)
    unknown = normalize_external_id(uuid.uuid4())
    sim.create_requests([pending])
    sim.create_requests([paid], state="paid")
    sim.create_requests([done], state="cancelled")

    summary = bulk_cancel.delay([pending, "not base64!", paid, unknown, done, pending]).get(
        timeout=30
    )

    assert summary == {
        "total": 6,
        "accepted": 4,
        "duplicates": 1,
        "invalid": [
            {
                "position": 1,
                "value": "'not base64!'",
                "error": "external_id: must be base64 (A-Z, a-z, 0-9, '+', '/') without padding",
            }
        ],
        "outcomes": {
            "cancelled": 1,
            "already_cancelled": 1,
            "not_cancellable": 1,
            "not_found": 1,
        },
        "failed": [],
        "handed_off": 0,
    }
    assert sim.request(pending) == {"external_id": pending, "state": "cancelled", "cancel_calls": 1}


def test_5000_ids_with_10_percent_faults_are_all_cancelled_once(sim, worker):
    ids = new_ids(5000)
    sim.create_requests(ids)
    before = sim.stats()
    sim.set_faults(FAULTS_10_PERCENT)

    summary = bulk_cancel.delay(ids).get(timeout=150)

    assert (summary["total"], summary["accepted"], summary["failed"]) == (5000, 5000, [])
    assert summary["outcomes"]["cancelled"] + summary["handed_off"] == 5000
    assert summary["outcomes"]["already_cancelled"] == 0  # ambiguity read as our own success
    # Handed-off ids finish in their own cancel_request tasks.
    wait_for(
        lambda: sim.stats()["cancels_applied"] - before["cancels_applied"] >= 5000,
        60,
        "every request cancelled",
    )
    after = sim.stats()
    assert after["cancels_applied"] - before["cancels_applied"] == 5000
    assert sum(after["faults_injected"].values()) > sum(before["faults_injected"].values()) + 300
    states = [sim.request(eid)["state"] for eid in ids]
    assert states == ["cancelled"] * 5000


def test_a_tight_budget_paces_the_chunks_and_kraken_refuses_none(environment, running_worker):
    rate, capacity = 20.0, 10
    queue = unique("q-bulk-budget")
    with SimulatorThread(rate_limit=(capacity, rate)) as limited:
        env = environment | {
            "KRAKEN_API_URL": limited.url,
            "KRAKEN_RATE_CAPACITY": str(capacity),
            "KRAKEN_RATE_PER_SECOND": str(rate),
            "KRAKEN_RATE_MAX_WAIT": "0.5",
            "KRAKEN_BULK_CHUNK": "50",
            # A short visibility timeout makes the chunk's window 2.5 s: the chunks must
            # stop and continue in a retry of themselves.
            "CELERY_VISIBILITY_TIMEOUT": "48",
        }
        ids = new_ids(200)
        limited.create_requests(ids)
        with running_worker(env, queue=queue, concurrency=2) as node:
            summary = bulk_cancel.apply_async((ids,), queue=queue).get(timeout=60)
            log = node.log()
        stats = limited.stats()

    assert summary["outcomes"]["cancelled"] == 200
    assert stats["rate_limited"] == 0
    assert stats["cancels_applied"] == 200
    assert "cancel_chunk continues later" in log
