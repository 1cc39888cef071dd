"""The ledger in the shop's own database (tasks.contrib.django_store on SQLite and on
PostgreSQL, tasks.contrib.sqlalchemy_store in the Flask example): a web process killed between
its commit and the publish still cancels.

The Django example runs as its users run it: its views in a fresh process, its own worker
and beat, the simulator as Kraken.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest
from tasks_support import PROJECTS, Node, drive, project_env, wait_for

from kraken.pay.simulator import DEMO_API_KEY, DEMO_API_SECRET, SimulatorThread

pytestmark = pytest.mark.slow

DJANGO = PROJECTS["django"]
POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatorThread]:
    with SimulatorThread(keys={DEMO_API_KEY: DEMO_API_SECRET}, nonce_window=0) as simulator:
        yield simulator


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def database(request) -> Iterator[dict[str, str]]:
    """The shop's database: a file, or a PostgreSQL database made for this module."""
    if request.param == "sqlite":
        yield {}
        return
    name = f"shop_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(POSTGRES, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield {"SHOP_POSTGRES_DB": name}
    finally:
        with psycopg.connect(POSTGRES, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def env(sim, redis_url, database, tmp_path_factory) -> dict[str, str]:
    data = tmp_path_factory.mktemp("django-store")
    return project_env(sim.url, redis_url, data, KRAKEN_LEDGER_GRACE="5") | database


def test_a_web_process_killed_between_its_commit_and_the_publish_still_cancels(
    env, sim, tmp_path
):
    order = drive(DJANGO, env, "order")
    eid = order["payment_external_id"]
    died = drive(DJANGO, env, "cancel-and-die", str(order["id"]), expect_status=-9)
    assert died is None  # no answer: it died after the commit
    assert drive(DJANGO, env, "row", eid)["state"] == "open"  # committed with the order
    assert sim.request(eid)["state"] == "pending"  # and nothing was sent
    worker = Node(DJANGO, env, tmp_path, "worker", "-Q", "celery,kraken_pay", "-c", "1")
    beat = Node(DJANGO, env, tmp_path, "beat", "-s", str(tmp_path / "beat-schedule"))
    try:
        try:
            wait_for(lambda: sim.request(eid)["state"] == "cancelled", 90, "the cancellation")
        except AssertionError:
            raise AssertionError(worker.log()[-3000:] + beat.log()[-1500:]) from None
        wait_for(lambda: drive(DJANGO, env, "row", eid)["state"] == "closed", 60, "row closed")
    finally:
        beat.stop()
        worker.stop()
    row = drive(DJANGO, env, "row", eid)
    assert (row["outcome"], row["sends"]) == ("cancelled", "1")
    assert "database relay sent count=1" in worker.log()


def test_a_cancellation_committed_with_the_order_is_queued_on_commit(env, sim, tmp_path):
    worker = Node(DJANGO, env, tmp_path, "worker", "-Q", "celery,kraken_pay", "-c", "1")
    try:
        wait_for(lambda: "ready." in worker.log(), 60, "the worker")
        order = drive(DJANGO, env, "order")
        eid = order["payment_external_id"]
        assert drive(DJANGO, env, "cancel", str(order["id"]))["http"] == 200
        try:
            wait_for(lambda: sim.request(eid)["state"] == "cancelled", 90, "the cancellation")
        except AssertionError:
            raise AssertionError(worker.log()[-4000:]) from None
        wait_for(lambda: drive(DJANGO, env, "row", eid)["state"] == "closed", 30, "row closed")
    finally:
        worker.stop()
    assert drive(DJANGO, env, "row", eid)["sends"] == "0"  # no relay needed


def test_the_flask_shop_killed_between_its_commit_and_the_publish_still_cancels(
    sim, redis_url, tmp_path
):
    flask = PROJECTS["flask"]
    env = project_env(sim.url, redis_url, tmp_path, KRAKEN_LEDGER_GRACE="5")
    order = drive(flask, env, "order")
    eid = order["payment_external_id"]
    assert drive(flask, env, "cancel-and-die", str(order["id"]), expect_status=-9) is None
    assert drive(flask, env, "row", eid)["state"] == "open"  # committed with the order
    worker = Node(flask, env, tmp_path, "worker", "-Q", "celery,kraken_pay", "-c", "1")
    beat = Node(flask, env, tmp_path, "beat", "-s", str(tmp_path / "beat-schedule"))
    try:
        wait_for(lambda: sim.request(eid)["state"] == "cancelled", 90, "the cancellation")
        wait_for(lambda: drive(flask, env, "row", eid)["state"] == "closed", 60, "row closed")
    finally:
        beat.stop()
        worker.stop()
    assert drive(flask, env, "row", eid)["sends"] == "1"
