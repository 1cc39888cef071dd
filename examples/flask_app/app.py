"""A minimal Flask shop whose orders are paid through Kraken Pay, with its own Celery app.

The Celery app comes from Flask's ``celery_init_app`` pattern and is configured from the
Flask config's ``CELERY`` dict, the library's settings included (``CELERY["kraken_pay"]``);
the library's tasks run on it, on their own queue, ``kraken_pay``.

Creating an order commits its external id first (Kraken's rule for ``Pay/request/create``),
then creates its payment request and schedules the request's cancellation for when it
expires; cancelling the order marks it cancelled and records the cancellation of its payment
request in the same transaction (``tasks.contrib.sqlalchemy_store``), and ``cancel_request``
is queued only once that commits: a rolled-back change never cancels a payment, and a
committed one always does, even if this process dies before the publish.

Run it with ``flask run`` in this directory and its worker with
``celery -A make_celery worker -Q celery,kraken_pay`` (see README.md); tests call
``create_app``.
"""

from __future__ import annotations

import json
import os
import sqlite3
import urllib.request
import uuid
from collections.abc import Callable

from celery import Celery, Task, shared_task
from flask import Flask, abort, current_app, g, jsonify
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from kraken.pay import normalize_external_id
from kraken.pay.webhooks import KRAKEN_JWKS_URL, PayCallback
from tasks import beat_schedule, schedule_cancel, unschedule_cancel
from tasks.contrib import sqlalchemy_store
from tasks.contrib.flask import pay_callbacks
from tasks.contrib.sqlalchemy_store import request_cancellation

SCHEMA = """
CREATE TABLE IF NOT EXISTS orders (
    id INTEGER PRIMARY KEY,
    payment_external_id TEXT UNIQUE NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending'
);
CREATE TABLE IF NOT EXISTS payment_events (
    id INTEGER PRIMARY KEY,
    payment_external_id TEXT NOT NULL,
    status TEXT NOT NULL,
    customer_kraktag TEXT
);
"""


def database_path() -> str:
    return os.environ.get("SHOP_DATABASE", "shop.sqlite3")


def create_payment_request(external_id: str) -> None:
    """Where your code asks Kraken Pay for the payment request (``Pay/request/create``).

    Run against the simulator (``SHOP_SIMULATOR_URL`` set, as in README.md), it creates the
    request there instead, so that its cancellation has something to cancel.
    """
    simulator = os.environ.get("SHOP_SIMULATOR_URL")
    if simulator:
        body = json.dumps({"external_id": external_id}).encode()
        request = urllib.request.Request(f"{simulator}/_sim/requests", data=body)
        urllib.request.urlopen(request, timeout=5).close()


def celery_config() -> dict:
    """The Flask config's ``CELERY`` dict: the project's broker, and the library's settings
    (any key left out of ``kraken_pay`` falls back to its KRAKEN_* variable)."""
    broker = os.environ.get("SHOP_BROKER_URL", "redis://127.0.0.1:6379/0")
    kraken_pay = {
        "api_key": os.environ.get("SHOP_KRAKEN_API_KEY", ""),
        "api_secret": os.environ.get("SHOP_KRAKEN_API_SECRET", ""),
        "api_url": os.environ.get("SHOP_KRAKEN_API_URL", "https://api.kraken.com"),
        "redis_url": os.environ.get("SHOP_REDIS_URL", "redis://127.0.0.1:6379/0"),
        # Where Kraken's keys for its status notifications are (the simulator's in tests),
        # and the shop's reaction to them, called on the worker once per notification.
        "jwks_url": os.environ.get("SHOP_KRAKEN_JWKS_URL", KRAKEN_JWKS_URL),
        "callback_hook": "app:record_payment_status",
    }
    return {
        "broker_url": broker,
        "result_backend": os.environ.get("SHOP_RESULT_BACKEND", broker),
        "imports": ["tasks"],  # registers the library's tasks on the project's workers
        "worker_prefetch_multiplier": 1,
        "broker_transport_options": {"visibility_timeout": 3600},
        "kraken_pay": kraken_pay,
        "beat_schedule": beat_schedule(kraken_pay),
    }


def celery_init_app(app: Flask) -> Celery:
    """Flask's pattern: a Celery app whose tasks run inside the Flask app's context."""

    class FlaskTask(Task):
        def __call__(self, *args: object, **kwargs: object) -> object:
            with app.app_context():
                return self.run(*args, **kwargs)

    celery_app = Celery(app.name, task_cls=FlaskTask)
    celery_app.config_from_object(app.config["CELERY"])
    celery_app.set_default()
    app.extensions["celery"] = celery_app
    # The ledger in the shop's own database: the workers relay its rows and close them.
    sqlalchemy_store.connect(_engine(app))
    return celery_app


def _engine(app: Flask) -> Engine:
    """One SQLAlchemy engine per app, on the shop's database."""
    if "db_engine" not in app.extensions:
        engine = create_engine(f"sqlite:///{app.config['DATABASE']}")
        sqlalchemy_store.metadata.create_all(engine)
        app.extensions["db_engine"] = engine
    return app.extensions["db_engine"]


def record_payment_status(callback: PayCallback) -> None:
    """The shop's reaction to a Kraken Pay notification (``callback_hook``), on the worker:
    ``handle_callback`` calls it once per distinct notification; raising makes it retry."""
    with sqlite3.connect(database_path()) as db:
        db.execute(
            "INSERT INTO payment_events (payment_external_id, status, customer_kraktag)"
            " VALUES (?, ?, ?)",
            (callback.external_id, callback.status, callback.customer_kraktag),
        )
        if callback.status == "success":  # paid after all: ship instead of cancelling
            db.execute(
                "UPDATE orders SET status = 'paid' WHERE payment_external_id = ?",
                (callback.external_id,),
            )


@shared_task(name="shop.order_cancelled")
def order_cancelled(order_id: int) -> dict[str, int]:
    """A task of the project's own (an email, a stock update...), on the project's queue."""
    return {"order_id": order_id}


def create_app(
    database: str | None = None,
    *,
    payment_expiry: float | None = None,
    create_request: Callable[[str], None] = create_payment_request,
) -> Flask:
    """The app; ``database`` defaults to ``$SHOP_DATABASE`` or ``shop.sqlite3``."""
    app = Flask(__name__)
    expiry = payment_expiry or float(os.environ.get("SHOP_PAYMENT_EXPIRY", 1800))
    app.config.update(
        DATABASE=database or database_path(),
        PAYMENT_EXPIRY=expiry,  # seconds before an unpaid request is cancelled
        CREATE_PAYMENT_REQUEST=create_request,
        CELERY=celery_config(),
    )
    celery_init_app(app)
    app.teardown_appcontext(_close_db)
    app.add_url_rule("/orders", view_func=create_order, methods=["POST"])
    app.add_url_rule("/orders/<int:order_id>/cancel", view_func=cancel_order, methods=["POST"])
    # Kraken Pay's status notifications (register this URL with Kraken).
    app.register_blueprint(pay_callbacks, url_prefix="/kraken/callbacks")
    with app.app_context(), _db() as db:
        db.executescript(SCHEMA)
    return app


def _db() -> sqlite3.Connection:
    if "db" not in g:
        g.db = sqlite3.connect(current_app.config["DATABASE"])
        g.db.row_factory = sqlite3.Row
    return g.db


def _close_db(_: BaseException | None) -> None:
    db = g.pop("db", None)
    if db is not None:
        db.close()


def create_order():
    eid = normalize_external_id(uuid.uuid4())
    with _db() as db:  # the external id is committed before Kraken hears of it
        order_id = db.execute(
            "INSERT INTO orders (payment_external_id, status) VALUES (?, 'creating')", (eid,)
        ).lastrowid
    current_app.config["CREATE_PAYMENT_REQUEST"](eid)
    with _db() as db:
        db.execute("UPDATE orders SET status = 'pending' WHERE id = ?", (order_id,))
    # Committed: unless it is paid or cancelled first, the request goes when it expires.
    schedule_cancel(eid, in_=current_app.config["PAYMENT_EXPIRY"])
    return jsonify(id=order_id, payment_external_id=eid, status="pending"), 201


def cancel_order(order_id: int):
    # One transaction: the order is cancelled and its payment request will be, or neither
    # (request_cancellation writes the ledger's row here and queues the task on commit; if
    # this process dies first, beat's relay sends it).
    with Session(_engine(current_app)) as session, session.begin():
        order = session.execute(
            text("SELECT payment_external_id FROM orders WHERE id = :id"), {"id": order_id}
        ).first()
        if order is None:
            abort(404)
        session.execute(
            text("UPDATE orders SET status = 'cancelled' WHERE id = :id"), {"id": order_id}
        )
        request_cancellation(session, order.payment_external_id)
    unschedule_cancel(order.payment_external_id)  # the expiry's schedule, now superseded
    order_cancelled.delay(order_id)
    return jsonify(id=order_id, payment_external_id=order.payment_external_id, status="cancelled")
