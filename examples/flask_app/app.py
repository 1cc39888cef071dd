"""A minimal Flask shop whose orders are paid through Kraken Pay.

Creating an order creates its payment request and schedules the request's cancellation for
when it expires; cancelling the order marks it cancelled, commits, and only then queues
``cancel_request``: a worker never cancels a payment for an order whose change was rolled
back, and never reads the order before the change is visible.

Run it with ``flask run`` in this directory (see README.md); tests call ``create_app``.
"""

from __future__ import annotations

import json
import os
import sqlite3
import urllib.request
import uuid
from collections.abc import Callable

from flask import Flask, abort, current_app, g, jsonify

from kraken.pay import normalize_external_id
from tasks import cancel_request, schedule_cancel, unschedule_cancel

SCHEMA = """
CREATE TABLE IF NOT EXISTS orders (
    id INTEGER PRIMARY KEY,
    payment_external_id TEXT UNIQUE NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending'
)
"""


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


def create_app(
    database: str | None = None,
    *,
    payment_expiry: float = 1800.0,
    create_request: Callable[[str], None] = create_payment_request,
) -> Flask:
    """The app; ``database`` defaults to ``$SHOP_DATABASE`` or ``shop.sqlite3``."""
    app = Flask(__name__)
    app.config.update(
        DATABASE=database or os.environ.get("SHOP_DATABASE", "shop.sqlite3"),
        PAYMENT_EXPIRY=payment_expiry,  # seconds before an unpaid request is cancelled
        CREATE_PAYMENT_REQUEST=create_request,
    )
    app.teardown_appcontext(_close_db)
    app.add_url_rule("/orders", view_func=create_order, methods=["POST"])
    app.add_url_rule("/orders/<int:order_id>/cancel", view_func=cancel_order, methods=["POST"])
    with app.app_context(), _db() as db:
        db.execute(SCHEMA)
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
    current_app.config["CREATE_PAYMENT_REQUEST"](eid)
    with _db() as db:  # one transaction, committed at the end of the block
        order_id = db.execute(
            "INSERT INTO orders (payment_external_id) VALUES (?)", (eid,)
        ).lastrowid
    # Committed: unless it is paid or cancelled first, the request goes when it expires.
    schedule_cancel(eid, in_=current_app.config["PAYMENT_EXPIRY"])
    return jsonify(id=order_id, payment_external_id=eid, status="pending"), 201


def cancel_order(order_id: int):
    with _db() as db:  # one transaction, committed at the end of the block
        order = db.execute(
            "SELECT payment_external_id FROM orders WHERE id = ?", (order_id,)
        ).fetchone()
        if order is None:
            abort(404)
        db.execute("UPDATE orders SET status = 'cancelled' WHERE id = ?", (order_id,))
    # Committed: now the payment request may go. Its retries are the worker's business.
    unschedule_cancel(order["payment_external_id"])
    cancel_request.delay(order["payment_external_id"])
    return jsonify(
        id=order_id, payment_external_id=order["payment_external_id"], status="cancelled"
    )
