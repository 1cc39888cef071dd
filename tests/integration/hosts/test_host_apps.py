"""The library inside a project's own Celery app: the Django and the Flask example, one contract.

Each example runs as its users would run it, in processes of its own: the web side (the
project's views, in a fresh process, tests/hosts/driver.py), the project's own
``celery -A <project> worker`` and ``celery -A <project> beat``, all configured from the
project's settings (SHOP_* variables here), with the simulator as Kraken and a real Redis as
the project's broker, result backend and the library's store. No KRAKEN_API_* variable is
set: the key reaches the library through the project's settings.
"""

from __future__ import annotations

import os
import signal

from tasks_support import Node, drive, wait_for

from kraken.pay.simulator import SimulatorThread


def cancelled(sim: SimulatorThread, eid: str) -> bool:
    return sim.request(eid)["state"] == "cancelled"


def test_importing_the_library_creates_no_app(project, env):
    assert drive(project, env, "apps")["apps_after_import"] == []


def test_the_views_cancellation_goes_through_the_projects_broker_and_ends_cancelled(
    project, env, sim, project_worker
):
    order = drive(project, env, "order")
    assert order["http"] == 201
    eid = order["payment_external_id"]
    assert sim.request(eid)["state"] == "pending"  # created after the id was committed
    assert drive(project, env, "cancel", str(order["id"]))["http"] == 200
    wait_for(lambda: cancelled(sim, eid), 30, "the request cancelled")
    log = project_worker.log()
    assert "kraken_pay.cancel_request" in log
    assert "shop.order_cancelled" in log  # the project's own task, beside it


def test_the_projects_own_task_still_uses_the_projects_app_after_import_tasks(
    project, env, project_worker
):
    answer = drive(project, env, "own-task")
    assert answer == {"result": {"order_id": 7}, "app": answer["app"]}
    assert answer["app"] != "kraken_pay"


def test_bulk_cancel_returns_through_the_projects_result_backend(project, env, sim, project_worker):
    ids = [drive(project, env, "order")["payment_external_id"] for _ in range(3)]
    answer = drive(project, env, "bulk", *ids)
    assert answer["summary"]["outcomes"]["cancelled"] == 3
    assert answer["app"] != "kraken_pay"
    assert all(cancelled(sim, eid) for eid in ids)


def test_a_pool_process_killed_mid_cancel_is_redelivered_and_ends_cancelled(
    project, env, sim, project_worker
):
    order = drive(project, env, "order")
    eid = order["payment_external_id"]
    before = sim.stats()["faults_injected"]["delay"]
    sim.set_faults({"delay": {"next": 1, "seconds": 4.0}})  # held well past the kill
    try:
        drive(project, env, "cancel", str(order["id"]))
        wait_for(lambda: sim.stats()["faults_injected"]["delay"] > before, 30, "the call")
        for pid in project_worker.pool_pids():  # whichever process holds it
            os.kill(pid, signal.SIGKILL)
        wait_for(lambda: cancelled(sim, eid), 60, "the redelivered cancellation")
    finally:
        sim.clear_faults()
    assert project_worker.proc.poll() is None
    # The main process logs the lost task once it has reaped the killed pool process.
    wait_for(lambda: "WorkerLostError" in project_worker.log(), 30, "the lost worker's line")


def test_a_worker_that_does_not_serve_kraken_pay_starts_without_credentials(project, env, tmp_path):
    bare = {k: v for k, v in env.items() if not k.startswith("SHOP_KRAKEN_API")}
    node = Node(project, bare, tmp_path, "worker", "-Q", "celery", "-c", "1")
    try:
        wait_for(lambda: "ready." in node.log() or node.proc.poll() is not None, 60, "worker")
        assert node.proc.poll() is None, node.log()[-3000:]
    finally:
        node.stop()


def test_a_worker_of_kraken_pay_without_credentials_refuses_in_one_line(project, env, tmp_path):
    bare = {k: v for k, v in env.items() if not k.startswith("SHOP_KRAKEN_API")}
    node = Node(project, bare, tmp_path, "worker", "-Q", "celery,kraken_pay", "-c", "1")
    assert node.proc.wait(60) == 78
    log = node.log()
    assert "celery worker not started: KRAKEN_API_KEY: is not set" in log
    assert "Traceback" not in log


def test_a_scheduled_cancellation_is_dispatched_by_the_projects_beat(
    project, env, sim, project_worker, tmp_path
):
    order = drive(project, env, "order", SHOP_PAYMENT_EXPIRY="0.5")
    eid = order["payment_external_id"]
    beat = Node(project, env, tmp_path, "beat", "-s", str(tmp_path / "beat-schedule"))
    try:
        wait_for(lambda: cancelled(sim, eid), 90, "the scheduled cancellation")
    finally:
        beat.stop()
    assert "kraken_pay.dispatch_due" in beat.log()  # sent by the project's own beat
