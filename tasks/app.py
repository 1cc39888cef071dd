"""The Celery app, configured from ``celeryconfig``, and the worker's start and stop hooks.

``celery -A tasks worker`` finds it as ``tasks.app``. A worker checks its configuration before
it consumes anything: a missing or undecodable secret, or a retry cap that does not fit in the
visibility timeout, stops it with one line on stderr and a non-zero exit status.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery, signals

from kraken.pay.errors import ConfigurationError
from tasks import runtime
from tasks.retry import RetryPolicy, check_visibility
from tasks.settings import get_settings

__all__ = ["app", "check_worker_config", "noop"]

log = logging.getLogger("tasks.app")

app = Celery("tasks")
app.config_from_object("celeryconfig")


@app.task(name="tasks.noop")
def noop() -> None:
    """Does nothing: the baseline of bench/tasks.py, and a readiness probe for workers."""


def check_worker_config(celery_app: Celery = app) -> None:
    """Raise ConfigurationError, naming the variable, for a configuration that cannot work."""
    settings = get_settings()
    settings.credentials()
    transport_options = celery_app.conf.broker_transport_options or {}
    visibility_timeout = float(transport_options.get("visibility_timeout", 3600))
    time_limit = float(celery_app.conf.task_time_limit or 0)
    check_visibility(RetryPolicy.from_settings(settings), visibility_timeout, time_limit)


@signals.worker_init.connect
def _refuse_bad_config(sender: Any = None, **_: Any) -> None:
    try:
        check_worker_config(getattr(sender, "app", None) or app)
    except ConfigurationError as exc:
        # SystemExit passes through Celery's signal dispatch; Python prints the one line.
        raise SystemExit(f"celery worker not started: {exc}") from None


@signals.worker_process_init.connect
def _start_runtime(**_: Any) -> None:
    # In a fresh pool process (after fork), or the solo pool's own process.
    runtime.start()


@signals.worker_process_shutdown.connect
def _close_runtime_in_child(**_: Any) -> None:
    runtime.shutdown()


@signals.worker_shutdown.connect
def _close_runtime(**_: Any) -> None:
    # The threads and solo pools run tasks in the worker's own process.
    runtime.shutdown()
