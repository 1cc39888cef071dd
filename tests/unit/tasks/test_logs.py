"""Logs: dispatch_due is quiet unless it sends something; every record of ours carries
task_id and external_id, on the event loop thread too; KRAKEN_LOG_JSON gives JSON lines."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import threading
import uuid

import pytest
import redis
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

from kraken.pay import normalize_external_id
from kraken.pay.simulator import DEMO_API_KEY, DEMO_API_SECRET, SimulatorThread
from tasks import cancel_request, logs, schedule_cancel
from tasks.celery import app
from tasks.checks import HEARTBEAT_KEY


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_the_fields_travel_to_the_event_loop_thread():
    log = logs.logger("tasks.test-fields")
    handler = Records()
    log.addHandler(handler)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def on_the_loop() -> None:
        log.warning("from the loop")

    try:
        logs.bind(task_id="t-1", external_id="AAAAAAAAAAE")
        asyncio.run_coroutine_threadsafe(logs.carry(on_the_loop()), loop).result(5)
        logs.bind(task_id=None, external_id=None)
        log.warning("after the task")
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        log.removeHandler(handler)
    first, after = handler.records
    assert (first.task_id, first.external_id) == ("t-1", "AAAAAAAAAAE")
    assert (after.task_id, after.external_id) == (None, None)


def test_the_quiet_filter_drops_only_dispatch_due_that_sent_nothing():
    quiet = logs._QuietDispatch()

    def record(args: dict) -> logging.LogRecord:
        return logging.LogRecord("celery.app.trace", logging.INFO, "", 0, "%(name)s", (args,), None)

    assert not quiet.filter(record({"name": "kraken_pay.dispatch_due", "id": "x"}))
    idle = {"name": "kraken_pay.dispatch_due", "id": "x", "return_value": "0", "runtime": 0.1}
    assert not quiet.filter(record(idle))
    assert quiet.filter(record(idle | {"return_value": "3"}))
    assert quiet.filter(record({"name": "kraken_pay.cancel_request", "id": "x"}))
    assert quiet.filter(record({"name": "shop.tasks.send_mail", "id": "x", "return_value": "0"}))


@pytest.mark.slow
def test_a_json_worker_is_quiet_when_nothing_is_due_and_its_records_carry_the_ids(
    redis_url, tmp_path
):
    queue = unique("q-logs")
    broker = redis_db(redis_url, BROKER_DB)
    tasks_url = redis_db(redis_url, TASKS_DB)
    store = redis.Redis.from_url(tasks_url)
    store.flushdb()  # nothing due but what this test schedules
    heartbeat = HEARTBEAT_KEY.format(prefix="kraken")
    with (
        SimulatorThread(keys={DEMO_API_KEY: DEMO_API_SECRET}, nonce_window=0) as sim,
        client_app(app, broker_url=broker, result_backend=broker, task_default_queue=queue) as c,
    ):
        env = worker_env(sim_url=sim.url, redis_url=tasks_url, broker_url=broker)
        node = Worker(env | {"KRAKEN_LOG_JSON": "true", "KRAKEN_QUEUE": queue}, queue, tmp_path)
        with workers(node):
            node.wait_ready(c)
            for _ in range(5):  # beat's idle ticks
                c.send_task("kraken_pay.dispatch_due", queue=queue)
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
            c.send_task("kraken_pay.dispatch_due", queue=queue)
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


@pytest.mark.parametrize(
    ("raw", "value"), [("1", True), ("yes", True), ("off", False), ("", False)]
)
def test_log_json_is_a_flag(raw, value):
    from tasks.settings import Settings

    assert Settings.from_env({"KRAKEN_LOG_JSON": raw}).log_json is value


def test_log_json_refuses_anything_but_a_flag():
    from kraken.pay.errors import ConfigurationError
    from tasks.settings import Settings

    with pytest.raises(ConfigurationError, match=r"^KRAKEN_LOG_JSON: must be true or false"):
        Settings.from_env({"KRAKEN_LOG_JSON": "maybe"})
