"""Workers killed with SIGKILL mid-task: the task is delivered again and the request ends
cancelled, once. A dead pool process is noticed at once; a dead node only after the broker's
visibility timeout, set short here."""

from __future__ import annotations

import os
import signal
import time
import uuid

from tasks_support import Worker, unique, wait_for, workers

from kraken.pay import normalize_external_id
from kraken.pay.simulator import SimulatorThread
from tasks import cancel_request


def in_flight(sim: SimulatorThread, before: int) -> bool:
    """Whether a call met the delay fault, i.e. it is now waiting inside the simulator."""
    return sim.stats()["faults_injected"]["delay"] > before


def test_a_pool_process_killed_mid_task_is_requeued_at_once(sim, environment, running_worker):
    visibility_timeout = 60.0
    env = environment | {
        "KRAKEN_TIMEOUT": "3",  # the dead process's ordering lock expires after 5 s
        "CELERY_VISIBILITY_TIMEOUT": str(visibility_timeout),
    }
    queue = unique("q-poolkill")
    eid = normalize_external_id(uuid.uuid4())
    sim.create_requests([eid])
    with running_worker(env, queue=queue, pool="prefork", concurrency=1) as node:
        before = sim.stats()
        sim.set_faults({"delay": {"next": 1, "seconds": 2.0}})

        result = cancel_request.apply_async((eid,), queue=queue)
        wait_for(lambda: in_flight(sim, before["faults_injected"]["delay"]), 20, "the call")
        (pool_pid,) = node.pool_pids()
        os.kill(pool_pid, signal.SIGKILL)  # as the OOM killer would
        killed_at = time.monotonic()

        outcome = result.get(timeout=60)
        recovered_in = time.monotonic() - killed_at
        node.check_alive()  # the node itself lives on, with a new pool process
        log = node.log()

    assert outcome["outcome"] == "cancelled"
    assert sim.request(eid)["state"] == "cancelled"
    assert sim.stats()["cancels_applied"] - before["cancels_applied"] == 1
    assert recovered_in < visibility_timeout / 2  # requeued at once, not after the timeout
    assert "WorkerLostError" in log


def test_a_node_killed_whole_has_its_tasks_finished_by_another_node(
    sim, client, environment, log_dir
):
    visibility_timeout = 8.0
    env = environment | {
        "KRAKEN_TIMEOUT": "2",
        "CELERY_VISIBILITY_TIMEOUT": str(visibility_timeout),
        "KRAKEN_SOFT_TIME_LIMIT": "4",
        "KRAKEN_TIME_LIMIT": "5",  # 0.5 s retry cap + 5 s + 1 s margin fit in 8 s
    }
    queue = unique("q-nodekill")
    doomed = Worker(env, queue, log_dir, pool="prefork", concurrency=2, name=unique("doomed"))
    survivor = Worker(env, queue, log_dir, pool="prefork", concurrency=2, name=unique("heir"))
    ids = [normalize_external_id(uuid.uuid4()) for _ in range(4)]
    sim.create_requests(ids)
    with workers(doomed):
        doomed.wait_ready(client)
        before = sim.stats()
        sim.set_faults({"delay": {"next": 2, "seconds": 1.5}})
        results = [cancel_request.apply_async((eid,), queue=queue) for eid in ids]
        # Both pool processes are waiting on Kraken; the other two tasks are reserved or
        # still queued.
        wait_for(lambda: in_flight(sim, before["faults_injected"]["delay"] + 1), 20, "2 calls")
        doomed.kill_node()
        killed_at = time.monotonic()

    unfinished = [eid for eid, r in zip(ids, results, strict=True) if not r.ready()]
    assert unfinished, "the node finished everything before it was killed"
    with workers(survivor):
        outcomes = [r.get(timeout=visibility_timeout + 30)["outcome"] for r in results]
        recovered_in = time.monotonic() - killed_at

    assert outcomes == ["cancelled"] * len(ids)
    assert all(sim.request(eid)["state"] == "cancelled" for eid in ids)
    assert sim.stats()["cancels_applied"] - before["cancels_applied"] == len(ids)
    # Redelivered after the visibility timeout, plus one restore sweep (1 s here), plus the
    # time the second node needs to start and run them.
    assert recovered_in < visibility_timeout + 10
