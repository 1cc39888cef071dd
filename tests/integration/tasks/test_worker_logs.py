"""A real worker's logs with KRAKEN_LOG_JSON: JSON lines only, quiet while nothing is due,
and every record of ours carries its task_id and external_id."""

from __future__ import annotations

import json
import re
import uuid

import redis
from tasks_support import wait_for

from kraken.pay import normalize_external_id
from tasks import cancel_request, schedule_cancel
from tasks.checks import HEARTBEAT_KEY


def test_a_json_worker_is_quiet_when_nothing_is_due_and_its_records_carry_the_ids(
    sim, environment, tasks_redis_url, client, queue, running_worker
):
    store = redis.Redis.from_url(tasks_redis_url)
    store.flushdb()  # nothing due but what this test schedules
    heartbeat = HEARTBEAT_KEY.format(prefix="kraken")
    with running_worker(environment | {"KRAKEN_LOG_JSON": "true"}) as node:
        for _ in range(5):  # beat's idle ticks
            client.send_task("kraken_pay.dispatch_due", queue=queue)
        wait_for(lambda: store.exists(heartbeat), 30, "the idle dispatches")
        idle_log = node.log()

        eid = normalize_external_id(uuid.uuid4())
        sim.create_requests([eid])
        sim.set_faults({"invalid_nonce": {"next": 1}})  # the client logs on its loop
        result = cancel_request.delay(eid)
        assert result.get(timeout=30)["outcome"] == "cancelled"

        due = normalize_external_id(uuid.uuid4())
        sim.create_requests([due])
        schedule_cancel(due, in_=0, redis=store)
        client.send_task("kraken_pay.dispatch_due", queue=queue)
        wait_for(lambda: sim.request(due)["state"] == "cancelled", 30, "the dispatch")
        wait_for(lambda: "relay sent" in node.log(), 10, "its line")
        lines = node.log().splitlines()

    idle = [json.loads(text) for text in idle_log.splitlines() if text.startswith("{")]
    assert idle and not [r for r in idle if "dispatch_due" in r["message"]]
    records = [json.loads(text) for text in lines if text.startswith("{")]
    assert records, lines[-20:]
    not_json = [text for text in lines if re.match(r"\[\d{4}-", text)]  # Celery's format
    assert not_json == [], not_json[:3]
    ours = [r for r in records if r.get("external_id") == eid]
    assert {r["name"] for r in ours} >= {"tasks.cancel", "kraken.pay.client"}
    assert {r["task_id"] for r in ours} == {result.id}
    dispatched = [r for r in records if r["message"].startswith("relay sent")]
    assert len(dispatched) == 1 and dispatched[0]["count"] == 1
    # Celery's "succeeded ...: 1" for it stays; its "received" lines never show.
    celerys = [r["message"] for r in records if "dispatch_due" in r["message"]]
    assert len(celerys) == 1 and celerys[0].endswith(": 1")
