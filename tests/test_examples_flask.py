"""examples/flask_app: its views, against a real worker and the simulator."""

from __future__ import annotations

import importlib.util
import sqlite3
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from types import ModuleType

import pytest
from tasks_support import (
    BROKER_DB,
    REPO,
    TASKS_DB,
    Worker,
    client_app,
    redis_db,
    unique,
    wait_for,
    worker_env,
    workers,
)

from kraken.pay.simulator import SimulatorThread
from tasks import app, cancel_request, scheduled
from tasks.schedule import dispatch_due
from tasks.settings import get_settings

EXAMPLE = REPO / "examples" / "flask_app" / "app.py"


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("flask_shop_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


shop = load_example()


@pytest.fixture(scope="module")
def kraken(redis_url: str, tmp_path_factory) -> Iterator[SimulatorThread]:
    """The simulator, and a worker that takes this process's tasks (its default queue)."""
    broker = redis_db(redis_url, BROKER_DB)
    queue = unique("q-flask")
    with SimulatorThread() as sim:
        env = worker_env(
            sim_url=sim.url, redis_url=redis_db(redis_url, TASKS_DB), broker_url=broker
        )
        node = Worker(env, queue, tmp_path_factory.mktemp("flask"), pool="threads")
        conf = {"broker_url": broker, "result_backend": broker, "task_default_queue": queue}
        with workers(node), client_app(app, **conf) as configured:
            node.wait_ready(configured)
            yield sim


@pytest.fixture
def database(tmp_path: Path) -> str:
    return str(tmp_path / "shop.sqlite3")


@pytest.fixture
def schedules(redis_url: str, redis_sync, monkeypatch) -> Iterator[None]:
    """This process's REDIS_URL, where the web process keeps schedules: the test database."""
    monkeypatch.setenv("REDIS_URL", redis_url)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture
def client(kraken: SimulatorThread, database: str, schedules, monkeypatch):
    """Flask's test client for the shop as shipped, creating its requests in the simulator."""
    monkeypatch.setenv("SHOP_SIMULATOR_URL", kraken.url)
    return shop.create_app(database).test_client()


def scheduled_ids() -> dict[str, datetime]:
    return dict(scheduled())


def committed_status(database: str, order_id: int) -> str:
    """The order's status as another connection sees it: what has been committed."""
    with sqlite3.connect(database) as other:
        return other.execute("SELECT status FROM orders WHERE id = ?", (order_id,)).fetchone()[0]


def test_a_new_order_has_a_pending_payment_request_whose_cancellation_is_scheduled(client, kraken):
    before = datetime.now(timezone.utc)
    response = client.post("/orders")
    assert response.status_code == 201
    order = response.get_json()
    eid = order["payment_external_id"]
    assert order["status"] == "pending"
    assert kraken.request(eid)["state"] == "pending"
    due = scheduled_ids()[eid]
    assert abs((due - before).total_seconds() - 1800) < 60  # PAYMENT_EXPIRY: 30 minutes


def test_an_unpaid_request_is_cancelled_when_it_expires(kraken, database, schedules, monkeypatch):
    monkeypatch.setenv("SHOP_SIMULATOR_URL", kraken.url)
    client = shop.create_app(database, payment_expiry=0).test_client()
    eid = client.post("/orders").get_json()["payment_external_id"]

    assert dispatch_due.apply().get() == 1  # what beat sends every KRAKEN_SCHEDULE_INTERVAL

    wait_for(lambda: kraken.request(eid)["state"] == "cancelled", 30, "the request cancelled")
    assert eid not in scheduled_ids()


def test_cancelling_an_order_cancels_its_payment_request(client, kraken, database):
    order = client.post("/orders").get_json()
    eid = order["payment_external_id"]

    response = client.post(f"/orders/{order['id']}/cancel")

    assert response.status_code == 200
    assert response.get_json()["status"] == "cancelled"
    assert committed_status(database, order["id"]) == "cancelled"
    wait_for(lambda: kraken.request(eid)["state"] == "cancelled", 30, "the request cancelled")
    assert kraken.request(eid)["cancel_calls"] == 1
    assert eid not in scheduled_ids()  # no second cancellation when it would have expired


def test_the_task_is_queued_only_after_the_commit(client, database, monkeypatch):
    order = client.post("/orders").get_json()
    seen_at_delay = []
    monkeypatch.setattr(
        cancel_request,
        "delay",
        lambda eid: seen_at_delay.append(committed_status(database, order["id"])),
    )

    client.post(f"/orders/{order['id']}/cancel")

    assert seen_at_delay == ["cancelled"]


def test_a_change_that_is_rolled_back_queues_nothing(client, database, monkeypatch):
    order = client.post("/orders").get_json()
    with sqlite3.connect(database) as db:
        db.execute(
            "CREATE TRIGGER refuse BEFORE UPDATE ON orders BEGIN SELECT RAISE(ABORT, 'no'); END"
        )
    queued = []
    monkeypatch.setattr(cancel_request, "delay", queued.append)

    response = client.post(f"/orders/{order['id']}/cancel")

    assert response.status_code == 500
    assert queued == []
    assert committed_status(database, order["id"]) == "pending"
    assert order["payment_external_id"] in scheduled_ids()  # still due when it expires


def test_an_unknown_order_is_404_and_queues_nothing(client, monkeypatch):
    queued = []
    monkeypatch.setattr(cancel_request, "delay", queued.append)
    assert client.post("/orders/999/cancel").status_code == 404
    assert queued == []
