"""Kraken Pay's notifications into the example projects, with real processes end to end.

The simulator (Kraken, in the test process) POSTs its signed notifications to the project's
receiver (``tasks.contrib.django.pay_callback_view`` or the Flask blueprint
``tasks.contrib.flask.pay_callbacks``, mounted at /kraken/callbacks), served by a real HTTP
server in a process of its own (tests/hosts/driver.py ``serve``); the receiver queues
``kraken_pay.handle_callback`` on the project's broker, and the project's own worker runs the
project's reaction (a Django signal receiver, a Flask ``callback_hook``), which records each
notification in the project's database.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
import redis
from tasks_support import DRIVER, drive, wait_for

from kraken.pay.simulator import SimulatorThread
from tasks.ledger import Ledger

CALLBACKS = "/kraken/callbacks"


@pytest.fixture(scope="module")
def web(project, env, sim, tmp_path_factory) -> Iterator[str]:
    """The project's receiver on a real HTTP server process; registered with the simulator."""
    log_path = tmp_path_factory.mktemp(f"{project.kind}-web") / "web.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, str(DRIVER), project.kind, "serve"],
            cwd=project.directory,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=log,
            start_new_session=True,
        )
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 60)
        line = proc.stdout.readline() if ready else b""
        assert line, f"the web server did not start:\n{log_path.read_text()[-3000:]}"
        url = f"http://127.0.0.1:{json.loads(line)['port']}{CALLBACKS}"
        sim.register_webhook(url)
        yield url
    finally:
        sim.clear_webhooks()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def events(project, env, eid: str) -> dict:
    return drive(project, env, "events", eid)


def recorded(project, env, eid: str, count: int) -> dict | None:
    """The shop's record of ``eid`` once it holds ``count`` notifications."""
    found = events(project, env, eid)
    return found if len(found["events"]) >= count else None


def handled_line(eid: str, status: str, handled: bool) -> str:
    return f"handle_callback external_id={eid} status={status} handled={str(handled).lower()}"


def both_handled(worker, eid: str, status: str) -> None:
    """Both deliveries reached the worker (in either order): one handled, one a duplicate."""
    lines = (handled_line(eid, status, True), handled_line(eid, status, False))
    wait_for(lambda: all(line in worker.log() for line in lines), 30, "both deliveries")
    assert worker.log().count(lines[0]) == 1


def new_order(project, env) -> str:
    order = drive(project, env, "order")
    assert order["http"] == 201
    return order["payment_external_id"]


def post(url: str, body: bytes) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=body, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def confirmed(env: dict[str, str], eid: str, flag: str) -> dict | None:
    """The project's ledger record of ``eid`` once it carries ``flag``."""
    client = redis.Redis.from_url(env["SHOP_REDIS_URL"])
    try:
        record = Ledger(client).closed(eid)
    finally:
        client.close()
    return record if record and record.get(flag) else None


def test_a_cancellation_ends_confirmed_by_krakens_notification(
    project, env, sim, project_worker, web
):
    order = drive(project, env, "order")
    eid = order["payment_external_id"]
    acknowledged = sim.stats()["webhooks_acknowledged"]
    assert drive(project, env, "cancel", str(order["id"]))["http"] == 200
    wait_for(lambda: sim.request(eid)["state"] == "cancelled", 30, "the request cancelled")
    sim.wait_webhooks()
    found = wait_for(lambda: recorded(project, env, eid, 1), 30, "the notification", 0.3)
    assert found["events"] == [["cancelled", None]]
    assert sim.stats()["webhooks_acknowledged"] == acknowledged + 1  # answered 200 at once
    assert handled_line(eid, "cancelled", True) in project_worker.log()
    record = wait_for(lambda: confirmed(env, eid, "confirmed_by_kraken"), 30, "the ledger")
    assert record["outcome"] == "cancelled"  # the ledger's entry closed, confirmed by Kraken


def test_a_payment_delivered_twice_runs_the_shops_reaction_once(
    project, env, sim, project_worker, web
):
    eid = new_order(project, env)
    before = sim.stats()
    sim.set_faults({"webhook_duplicate": {"next": 1}})
    try:
        sim.pay(eid, "alice")
        sim.wait_webhooks()
    finally:
        sim.clear_faults()
    after = sim.stats()
    assert after["webhook_faults_injected"]["webhook_duplicate"] == (
        before["webhook_faults_injected"]["webhook_duplicate"] + 1
    )
    assert after["webhooks_acknowledged"] == before["webhooks_acknowledged"] + 2
    both_handled(project_worker, eid, "success")
    found = events(project, env, eid)
    assert found == {"events": [["success", "alice"]], "order_status": "paid"}


def test_each_state_change_runs_the_reaction_once_under_duplicates(
    project, env, sim, project_worker, web
):
    expired, paid = new_order(project, env), new_order(project, env)
    sim.set_faults({"webhook_duplicate": {"rate": 1.0}})
    try:
        sim.expire(expired)
        sim.pay(paid, None)
        sim.wait_webhooks()
    finally:
        sim.clear_faults()
    for eid, status in ((expired, "expired"), (paid, "success")):
        wait_for(
            lambda e=eid, s=status: handled_line(e, s, False) in project_worker.log(), 30, "dup"
        )
        assert events(project, env, eid)["events"] == [[status, None]]


@pytest.mark.parametrize(
    "fault", ["webhook_bad_signature", "webhook_unknown_key", "webhook_expired"]
)
def test_a_forged_notification_is_answered_4xx_and_changes_nothing(
    project, env, sim, project_worker, web, fault
):
    eid = new_order(project, env)
    before = sim.stats()
    sim.set_faults({fault: {"next": 1}})
    try:
        sim.pay(eid, "mallory")
        sim.wait_webhooks()
    finally:
        sim.clear_faults()
    after = sim.stats()
    assert after["webhook_faults_injected"][fault] == before["webhook_faults_injected"][fault] + 1
    assert after["webhooks_failed"] == before["webhooks_failed"] + 1  # every try refused
    assert after["webhooks_acknowledged"] == before["webhooks_acknowledged"]
    assert events(project, env, eid) == {"events": [], "order_status": "pending"}
    assert f"external_id={eid}" not in project_worker.log()


def test_the_receiver_answers_garbage_400_and_a_large_body_413(project, env, sim, web):
    status, body = post(web, b"not.a.jwt")
    assert (status, body["reason"]) == (400, "not_a_jwt")
    status, body = post(web, b"x" * (64 * 1024))
    assert status == 413
    assert body == {"error": "body: must be at most 9216 bytes"}


def test_the_simulator_registered_the_receiver(sim: SimulatorThread, web):
    assert sim.webhooks() == [web]


def test_a_payment_made_while_its_cancellation_is_queued_wins_and_runs_the_hook_once(
    project, env, sim, project_worker, web
):
    """The customer pays while the cancellation waits on Kraken: Kraken refuses to cancel a
    paid request, its ``success`` arrives twice, and the shop marks the order paid once."""
    order = drive(project, env, "order")
    eid = order["payment_external_id"]
    delays = sim.stats()["faults_injected"]["delay"]
    sim.set_faults({"delay": {"next": 1, "seconds": 1.5}, "webhook_duplicate": {"next": 1}})
    try:
        assert drive(project, env, "cancel", str(order["id"]))["http"] == 200
        wait_for(lambda: sim.stats()["faults_injected"]["delay"] > delays, 30, "the cancel call")
        sim.pay(eid, "bob")  # while the cancellation is held up at Kraken
        outcome = f"external_id={eid} outcome=not_cancellable"
        wait_for(lambda: outcome in project_worker.log(), 30, "the cancellation's outcome")
        sim.wait_webhooks()
    finally:
        sim.clear_faults()
    both_handled(project_worker, eid, "success")
    assert events(project, env, eid) == {"events": [["success", "bob"]], "order_status": "paid"}
    assert sim.request(eid)["state"] == "paid"
    record = wait_for(lambda: confirmed(env, eid, "paid_meanwhile"), 30, "the ledger")
    assert record["outcome"] == "not_cancellable"  # paid meanwhile: the shop ships instead
