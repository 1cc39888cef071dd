"""Logs: dispatch_due is quiet unless it sends something; every record of ours carries
task_id and external_id, on the event loop thread too; KRAKEN_LOG_JSON gives JSON lines."""

from __future__ import annotations

import asyncio
import logging
import threading

import pytest

from tasks import logs


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
