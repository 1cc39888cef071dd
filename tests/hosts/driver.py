"""The web side of an example project, run in a fresh process as the project would run it.

``python driver.py django|flask ACTION [ARG...]`` from the project's directory prints one
JSON document. Actions: ``order`` (create one), ``cancel ORDER_ID``, ``own-task`` (the
project's own task, through its own broker and result backend), ``bulk ID...``
(``bulk_cancel(...).get()``), ``apps`` (what importing the library did to Celery's apps),
and for Django ``cancel-and-die ORDER_ID`` (killed between its commit and the publish) and
``row ID`` (the database store's row).
"""

from __future__ import annotations

import json
import os
import signal
import sys
from typing import Any

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


class Flask:
    def __init__(self) -> None:
        from app import create_app, order_cancelled

        self.app = create_app()
        self.client = self.app.test_client()
        self.own_task = order_cancelled

    def post(self, path: str) -> Any:
        response = self.client.post(path)
        return {"http": response.status_code, **response.get_json()}


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
    if action == "order":
        return project.post("/orders")
    if action == "cancel":
        return project.post(f"/orders/{int(args[0])}/cancel")
    if action == "own-task":
        result = project.own_task.delay(7)
        return {"result": result.get(timeout=RESULT_TIMEOUT), "app": project.own_task.app.main}
    if action == "cancel-and-die":  # the process dies between its commit and the publish
        from tasks.contrib.django_store import store

        store._publish = lambda eid: os.kill(os.getpid(), signal.SIGKILL)
        return project.post(f"/orders/{int(args[0])}/cancel")
    if action == "row":
        from tasks.contrib.django_store.models import Cancellation

        row = Cancellation.objects.filter(external_id=args[0]).values().first()
        return {k: str(v) for k, v in (row or {}).items()}
    if action == "bulk":
        from tasks import bulk_cancel

        summary = bulk_cancel.delay(list(args)).get(timeout=RESULT_TIMEOUT)
        return {"summary": summary, "app": bulk_cancel.app.main}
    raise SystemExit(f"unknown action {action!r}")


if __name__ == "__main__":
    sys.path.insert(0, os.getcwd())  # the project's directory, as manage.py or flask would
    print(json.dumps(main(*sys.argv[1:])))
