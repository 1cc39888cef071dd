"""The base class of every task of the library: what makes a task safe is the task's own.

The tasks are ``shared_task``s: they bind to whichever Celery app runs them, the user's or
the standalone one. So no host configuration can weaken them, each carries its own options:

* acknowledged late, and put back when its worker is lost (a SIGKILL mid-call re-runs it);
* JSON only, both ways; results kept whatever ``task_ignore_result`` says;
* sent to the library's queue (``kraken_pay`` unless the ``queue`` setting says otherwise),
  so a broker shared with the project's own tasks never mixes the two; ``task_routes`` and
  an explicit ``queue=`` still win;
* a message of the wrong shape rejected and logged, not the end of the worker
  (:mod:`tasks.strategy`);
* time limits left out of the message: a worker applies its own, from its own settings
  (see :mod:`tasks.worker`), never what the sender's settings would have said.
"""

from __future__ import annotations

from typing import Any

from celery import Task

from tasks.settings import Settings, settings_for

__all__ = ["KrakenPayTask", "broker_visibility_timeout", "task_name"]

PREFIX = "kraken_pay"
_REDIS_LIKE = ("redis", "rediss", "sentinel", "sqs")  # brokers with a visibility timeout
_KOMBU_VISIBILITY_DEFAULT = 3600.0


def task_name(short: str) -> str:
    """``kraken_pay.<short>``: every task name of the library is namespaced."""
    return f"{PREFIX}.{short}"


def broker_visibility_timeout(app: Any) -> float | None:
    """Seconds the app's broker waits before it delivers an unacknowledged task again, or
    ``None`` for a broker without one (RabbitMQ)."""
    scheme = str(app.conf.broker_url or "").partition("://")[0].partition("+")[0]
    if scheme not in _REDIS_LIKE:
        return None
    options = app.conf.broker_transport_options or {}
    return float(options.get("visibility_timeout", _KOMBU_VISIBILITY_DEFAULT))


class KrakenPayTask(Task):
    """Options and settings shared by the library's tasks."""

    acks_late = True
    reject_on_worker_lost = True
    serializer = "json"
    # Results are the outcomes callers read and what a bulk chord joins on: kept even on an
    # app whose task_ignore_result is True (Flask's celery_init_app example sets it).
    ignore_result = False
    # A malformed message is rejected and logged, never the end of the worker.
    Strategy = "tasks.strategy:guarded"
    # No time limits in messages: the worker sets them on its own task objects.
    time_limit = None
    soft_time_limit = None

    @property
    def settings(self) -> Settings:
        """The settings of the app this task is bound to, resolved on first use."""
        return settings_for(self.app)

    def apply_async(self, args=None, kwargs=None, task_id=None, **options: Any):  # type: ignore[override]
        return super().apply_async(args, kwargs, task_id=task_id, **self.send_options(options))

    def send_options(self, options: dict[str, Any]) -> dict[str, Any]:
        """``options`` with the library's queue and without sender-side time limits."""
        options = dict(options)
        options.setdefault("queue", self.settings.queue)
        options.setdefault("time_limit", None)
        options.setdefault("soft_time_limit", None)
        return options

    def task(self, short: str) -> Task:
        """Another task of the library, on the same app (chunks, hand-offs, dispatch)."""
        return self.app.tasks[task_name(short)]
