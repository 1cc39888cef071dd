"""How a worker reads the library's messages: one that is not what the task expects is
rejected and logged, and the worker keeps running.

Celery's default strategy builds the request from the message body in the worker's consumer;
a body of the wrong shape (``{"a": 1}`` instead of ``[args, kwargs, embed]``) raises there,
and the consumer stops the whole worker, again at every restart while the message waits. This
strategy turns that into Celery's ``InvalidTaskError``, which the consumer logs and rejects.
"""

from __future__ import annotations

from typing import Any

from celery.exceptions import InvalidTaskError
from celery.worker.strategy import default

__all__ = ["guarded"]

_MALFORMED = (ValueError, TypeError, KeyError, AttributeError)


def guarded(task: Any, app: Any, consumer: Any, **options: Any) -> Any:
    """Celery's default strategy for ``task``, refusing malformed bodies one by one."""
    handle = default(task, app, consumer, **options)

    def handle_guarded(message: Any, body: Any, ack: Any, reject: Any, callbacks: Any, **kw: Any):
        try:
            return handle(message, body, ack, reject, callbacks, **kw)
        except _MALFORMED as exc:
            raise InvalidTaskError(
                f"{task.name}: the message body is not [args, kwargs, embed] "
                f"({type(exc).__name__}); rejected"
            ) from None

    return handle_guarded
