"""The web side of an example project, run in a fresh process as the project would run it.

``python driver.py django|flask ACTION [ARG...]`` from the project's directory prints one
JSON document. Actions: ``order`` (create one), ``cancel ORDER_ID``, ``own-task`` (the
project's own task, through its own broker and result backend), ``bulk ID...``
(``bulk_cancel(...).get()``), ``apps`` (what importing the library did to Celery's apps),
``events ID`` (the Kraken Pay notifications the shop recorded for a payment request, and its
order's status), ``serve`` (the project's WSGI app on a real HTTP server, threaded, on an
ephemeral loopback port: prints ``{"port": N}``, then serves until killed), and for Django
``cancel-and-die ORDER_ID`` (killed between its commit and the publish) and ``row ID`` (the
database store's row).
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import sys
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

RESULT_TIMEOUT = 60


class Django:
    def __init__(self) -> None:
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "shop.settings")
        import django
        from django.core.management import call_command

        django.setup()
        call_command("migrate", verbosity=0)
        from django.test import Client

        self.client = Client()
        from shop.tasks import order_cancelled

        self.own_task = order_cancelled

    def post(self, path: str) -> Any:
        response = self.client.post(path)
        return {"http": response.status_code, **response.json()}

    def store(self) -> Any:
        from tasks.contrib.django_store import store

        return store

    def row(self, eid: str) -> dict | None:
        from tasks.contrib.django_store.models import Cancellation

        return Cancellation.objects.filter(external_id=eid).values().first()

    def wsgi(self) -> Any:
        from django.core.wsgi import get_wsgi_application

        return get_wsgi_application()

    def events(self, eid: str) -> dict[str, Any]:
        from shop.models import Order, PaymentEvent

        found = PaymentEvent.objects.filter(payment_external_id=eid).order_by("id")
        order = Order.objects.filter(payment_external_id=eid).first()
        return {
            "events": [[e.status, e.customer_kraktag] for e in found],
            "order_status": order.status if order else None,
        }


class Flask:
    def __init__(self) -> None:
        from app import create_app, order_cancelled

        self.app = create_app()
        self.client = self.app.test_client()
        self.own_task = order_cancelled

    def post(self, path: str) -> Any:
        response = self.client.post(path)
        return {"http": response.status_code, **response.get_json()}

    def store(self) -> Any:
        from tasks.contrib import sqlalchemy_store

        return sqlalchemy_store

    def row(self, eid: str) -> dict | None:
        from sqlalchemy import select

        from tasks.contrib.sqlalchemy_store import cancellations

        with self.app.extensions["db_engine"].connect() as connection:
            found = connection.execute(
                select(cancellations).where(cancellations.c.external_id == eid)
            ).first()
        return dict(found._mapping) if found else None

    def wsgi(self) -> Any:
        return self.app

    def events(self, eid: str) -> dict[str, Any]:
        with sqlite3.connect(self.app.config["DATABASE"]) as db:
            found = db.execute(
                "SELECT status, customer_kraktag FROM payment_events"
                " WHERE payment_external_id = ? ORDER BY id",
                (eid,),
            ).fetchall()
            order = db.execute(
                "SELECT status FROM orders WHERE payment_external_id = ?", (eid,)
            ).fetchone()
        return {"events": [list(row) for row in found], "order_status": order and order[0]}


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        sys.stderr.write(f"{self.command} {self.path} {args[1] if len(args) > 1 else ''}\n")


def serve(project: Django | Flask) -> None:
    """The project's WSGI app on 127.0.0.1, an ephemeral port; the port goes to stdout."""
    server = make_server(
        "127.0.0.1", 0, project.wsgi(), server_class=_ThreadingServer, handler_class=_QuietHandler
    )
    print(json.dumps({"port": server.server_port}), flush=True)
    server.serve_forever()


def apps() -> dict[str, Any]:
    """Import the library alone, then ask Celery what exists: nothing should."""
    from celery import _state

    import tasks  # noqa: F401

    before = [app.main for app in _state._get_active_apps()]
    return {"apps_after_import": before, "current_is_set": _state.default_app is not None}


def main(kind: str, action: str, *args: str) -> Any:
    if action == "apps":
        return apps()
    project = Django() if kind == "django" else Flask()
    if action == "serve":
        serve(project)
        return None
    if action == "events":
        return project.events(args[0])
    if action == "order":
        return project.post("/orders")
    if action == "cancel":
        return project.post(f"/orders/{int(args[0])}/cancel")
    if action == "own-task":
        result = project.own_task.delay(7)
        return {"result": result.get(timeout=RESULT_TIMEOUT), "app": project.own_task.app.main}
    if action == "cancel-and-die":  # the process dies between its commit and the publish
        store = project.store()
        store._publish = lambda eid: os.kill(os.getpid(), signal.SIGKILL)
        return project.post(f"/orders/{int(args[0])}/cancel")
    if action == "row":
        return {k: str(v) for k, v in (project.row(args[0]) or {}).items()}
    if action == "bulk":
        from tasks import bulk_cancel

        summary = bulk_cancel.delay(list(args)).get(timeout=RESULT_TIMEOUT)
        return {"summary": summary, "app": bulk_cancel.app.main}
    raise SystemExit(f"unknown action {action!r}")


if __name__ == "__main__":
    sys.path.insert(0, os.getcwd())  # the project's directory, as manage.py or flask would
    answer = main(*sys.argv[1:])
    if answer is not None:
        print(json.dumps(answer))
