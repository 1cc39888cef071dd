"""examples/django_app: its views, against a real worker and the simulator."""

from __future__ import annotations

import os
import sqlite3
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

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

EXAMPLE = REPO / "examples" / "django_app"


@pytest.fixture(scope="module")
def database(tmp_path_factory) -> Iterator[str]:
    """Django set up with the example's settings, on a migrated sqlite file of its own."""
    path = str(tmp_path_factory.mktemp("django") / "shop.sqlite3")
    sys.path.insert(0, str(EXAMPLE))
    saved = {name: os.environ.get(name) for name in ("DJANGO_SETTINGS_MODULE", "SHOP_DATABASE")}
    os.environ.update(DJANGO_SETTINGS_MODULE="shop.settings", SHOP_DATABASE=path)
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)
    yield path
    sys.path.remove(str(EXAMPLE))
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(scope="module")
def kraken(redis_url: str, tmp_path_factory) -> Iterator[SimulatorThread]:
    """The simulator, and a worker that takes this process's tasks (its default queue)."""
    broker = redis_db(redis_url, BROKER_DB)
    queue = unique("q-django")
    with SimulatorThread() as sim:
        tasks_db = redis_db(redis_url, TASKS_DB)
        env = worker_env(sim_url=sim.url, redis_url=tasks_db, broker_url=broker)
        env.pop("DJANGO_SETTINGS_MODULE", None)  # the worker is no part of the Django site
        node = Worker(env, queue, tmp_path_factory.mktemp("django-worker"), pool="threads")
        conf = {"broker_url": broker, "result_backend": broker, "task_default_queue": queue}
        with workers(node), client_app(app, **conf) as configured:
            node.wait_ready(configured)
            yield sim


@pytest.fixture
def schedules(redis_url: str, redis_sync, monkeypatch) -> Iterator[None]:
    """This process's REDIS_URL, where the web process keeps schedules: the test database."""
    monkeypatch.setenv("REDIS_URL", redis_url)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture
def client(database, kraken, schedules, monkeypatch):
    """Django's test client for the shop as shipped, creating its requests in the simulator."""
    from django.test import Client

    monkeypatch.setenv("SHOP_SIMULATOR_URL", kraken.url)
    return Client()


def scheduled_ids() -> dict[str, datetime]:
    return dict(scheduled())


def committed_status(database: str, order_id: int) -> str:
    """The order's status as another connection sees it: what has been committed."""
    with sqlite3.connect(database) as other:
        row = other.execute("SELECT status FROM shop_order WHERE id = ?", (order_id,)).fetchone()
        return row[0]


def test_a_new_order_schedules_the_cancellation_of_its_payment_request_on_commit(client, kraken):
    before = datetime.now(timezone.utc)
    response = client.post("/orders")
    assert response.status_code == 201
    order = response.json()
    eid = order["payment_external_id"]
    assert order["status"] == "pending"
    assert kraken.request(eid)["state"] == "pending"
    due = scheduled_ids()[eid]
    assert abs((due - before).total_seconds() - 1800) < 60  # SHOP_PAYMENT_EXPIRY: 30 minutes


def test_an_unpaid_request_is_cancelled_when_it_expires(client, kraken):
    from django.test import override_settings

    with override_settings(SHOP_PAYMENT_EXPIRY=timedelta(0)):
        eid = client.post("/orders").json()["payment_external_id"]

    assert dispatch_due.apply().get() == 1  # what beat sends every KRAKEN_SCHEDULE_INTERVAL

    wait_for(lambda: kraken.request(eid)["state"] == "cancelled", 30, "the request cancelled")
    assert eid not in scheduled_ids()


def test_cancelling_an_order_cancels_its_payment_request(client, kraken, database):
    order = client.post("/orders").json()
    eid = order["payment_external_id"]

    response = client.post(f"/orders/{order['id']}/cancel")

    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    assert committed_status(database, order["id"]) == "cancelled"
    wait_for(lambda: kraken.request(eid)["state"] == "cancelled", 30, "the request cancelled")
    assert kraken.request(eid)["cancel_calls"] == 1
    assert eid not in scheduled_ids()  # no second cancellation when it would have expired


def test_the_task_is_queued_on_commit(client, database, monkeypatch):
    order = client.post("/orders").json()
    seen_at_delay = []
    monkeypatch.setattr(
        cancel_request,
        "delay",
        lambda eid: seen_at_delay.append(committed_status(database, order["id"])),
    )

    client.post(f"/orders/{order['id']}/cancel")

    assert seen_at_delay == ["cancelled"]


def test_a_change_that_is_rolled_back_queues_nothing(client, database, monkeypatch):
    from shop.models import Order

    order = client.post("/orders").json()
    queued = []
    monkeypatch.setattr(cancel_request, "delay", queued.append)
    save = Order.save

    def save_then_fail(self, *args, **kwargs):
        save(self, *args, **kwargs)
        raise RuntimeError("the transaction fails after the save")

    monkeypatch.setattr(Order, "save", save_then_fail)

    with pytest.raises(RuntimeError):
        client.post(f"/orders/{order['id']}/cancel")

    assert queued == []
    assert committed_status(database, order["id"]) == "pending"
    assert order["payment_external_id"] in scheduled_ids()  # still due when it expires


def test_an_unknown_order_is_404_and_queues_nothing(client, monkeypatch):
    queued = []
    monkeypatch.setattr(cancel_request, "delay", queued.append)
    assert client.post("/orders/999999/cancel").status_code == 404
    assert queued == []
