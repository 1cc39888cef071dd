"""What every receiver shares: the process's verifier, and the hand-off to the worker."""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from kraken.pay.webhooks import MAX_BODY_BYTES, PayCallback, PayCallbackVerifier, Reply, receive
from tasks.base import task_name
from tasks.settings import settings_for

__all__ = [
    "MAX_BODY_BYTES",
    "NotQueued",
    "answer",
    "not_queued",
    "publish",
    "running_app",
    "too_large",
    "verifier",
]

log = logging.getLogger("tasks.contrib")

# How hard the web process tries the broker before it answers 503 (Kraken then retries).
PUBLISH_RETRY = {"max_retries": 2, "interval_start": 0.0, "interval_step": 0.2, "interval_max": 0.5}
_NOT_QUEUED = {"error": "queue: the notification could not be queued; send it again"}

_lock = threading.Lock()
_verifiers: dict[tuple[int, str], PayCallbackVerifier] = {}


class NotQueued(Exception):
    """The broker did not take the notification's task."""


def verifier(app: Any = None) -> PayCallbackVerifier:
    """This process's verifier for the running app's ``jwks_url`` (keys cached across calls)."""
    key = (os.getpid(), settings_for(app).jwks_url)
    with _lock:
        found = _verifiers.get(key)
        if found is None:
            found = _verifiers[key] = PayCallbackVerifier(key[1])
        return found


def running_app() -> Any:
    """The Celery app current in this thread (the project's: Django's and Flask's set it)."""
    from celery import current_app

    return current_app._get_current_object()


def publish(callback: PayCallback, app: Any = None) -> None:
    """Queue ``handle_callback`` on ``app`` (default: the running one); :class:`NotQueued` if
    the broker does not take it."""
    import tasks.callbacks  # noqa: F401 - registers the task on every app

    task = (app or running_app()).tasks[task_name("handle_callback")]
    try:
        task.apply_async((callback.to_dict(),), retry=True, retry_policy=PUBLISH_RETRY)
    except Exception as exc:  # kombu and redis raise many kinds; all mean "not queued"
        log.error(
            "kraken pay callback not queued: %s external_id=%s",
            type(exc).__name__,
            callback.external_id,
            extra={"event": "callback.not_queued", "error_class": type(exc).__name__},
        )
        raise NotQueued(type(exc).__name__) from None


def too_large(content_length: int | None) -> Reply | None:
    """413 before the body is read, when the request says it is too large."""
    if content_length is not None and content_length > MAX_BODY_BYTES:
        return Reply(413, {"error": f"body: must be at most {MAX_BODY_BYTES} bytes"})
    return None


def answer(body: bytes, content_type: str | None) -> Reply:
    """Verify, queue, and what to answer Kraken (a WSGI framework's whole receiver)."""
    try:
        return receive(body, content_type, verifier(), publish)
    except NotQueued:
        return not_queued()


def not_queued() -> Reply:
    return Reply(503, dict(_NOT_QUEUED))
