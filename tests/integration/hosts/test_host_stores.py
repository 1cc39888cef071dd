"""The ledger in the shop's own database, in both examples: ``tasks.contrib.django_store``
(Django, on SQLite and on PostgreSQL) and ``tasks.contrib.sqlalchemy_store`` (Flask, on
SQLite). A web process killed between its commit and the publish still cancels; a
cancellation committed with the order is queued once the commit is visible.

Each example runs as its users run it: its views in a fresh process, its own worker and
beat, the simulator as Kraken.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest
from tasks_support import Node, drive, wait_for

POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"

pytestmark = pytest.mark.parametrize(
    ("project", "database"),
    [("django", "sqlite"), ("django", "postgresql"), ("flask", "sqlite")],
    indirect=True,
    scope="module",
)


@pytest.fixture(scope="module")
def database(request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    """The shop's database: its SQLite file, or a PostgreSQL database made for this module."""
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
def env(env: dict[str, str], database: dict[str, str]) -> dict[str, str]:
    """The project's environment on that database; beat relays what waited 5 s."""
    return env | {"KRAKEN_LEDGER_GRACE": "5"} | database


def cancelled(sim, eid: str) -> bool:
    return sim.request(eid)["state"] == "cancelled"


def test_a_web_process_killed_between_its_commit_and_the_publish_still_cancels(
    project, env, sim, tmp_path
):
    order = drive(project, env, "order")
    eid = order["payment_external_id"]
    died = drive(project, env, "cancel-and-die", str(order["id"]), expect_status=-9)
    assert died is None  # no answer: it died after the commit
    assert drive(project, env, "row", eid)["state"] == "open"  # committed with the order
    assert sim.request(eid)["state"] == "pending"  # and nothing was sent
    worker = Node(project, env, tmp_path, "worker", "-Q", "celery,kraken_pay", "-c", "1")
    beat = Node(project, env, tmp_path, "beat", "-s", str(tmp_path / "beat-schedule"))
    try:
        try:
            wait_for(lambda: cancelled(sim, eid), 90, "the cancellation")
        except AssertionError:
            raise AssertionError(worker.log()[-3000:] + beat.log()[-1500:]) from None
        wait_for(lambda: drive(project, env, "row", eid)["state"] == "closed", 60, "row closed")
    finally:
        beat.stop()
        worker.stop()
    row = drive(project, env, "row", eid)
    assert (row["outcome"], row["sends"]) == ("cancelled", "1")
    assert "database relay sent count=1" in worker.log()


def test_a_cancellation_committed_with_the_order_is_queued_on_commit(project, env, sim, tmp_path):
    worker = Node(project, env, tmp_path, "worker", "-Q", "celery,kraken_pay", "-c", "1")
    try:
        wait_for(lambda: "ready." in worker.log(), 60, "the worker")
        order = drive(project, env, "order")
        eid = order["payment_external_id"]
        assert drive(project, env, "cancel", str(order["id"]))["http"] == 200
        try:
            wait_for(lambda: cancelled(sim, eid), 90, "the cancellation")
        except AssertionError:
            raise AssertionError(worker.log()[-4000:]) from None
        wait_for(lambda: drive(project, env, "row", eid)["state"] == "closed", 30, "row closed")
    finally:
        worker.stop()
    assert drive(project, env, "row", eid)["sends"] == "0"  # no relay needed
