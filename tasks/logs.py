"""The library's log records: quiet, and each one carrying ``task_id`` and ``external_id``.

* Fields: every record of the library's loggers (``tasks.*``, ``kraken.pay.*``) gets
  ``task_id`` (the Celery task it was logged for) and ``external_id`` (the payment request,
  when one is in hand), also on the worker's event loop thread, where Celery's own idea of
  the current task does not reach: the values travel in a context variable.
* Quiet: ``dispatch_due`` runs every second. A worker of the ``kraken_pay`` queue drops
  Celery's "received" and "succeeded ...: 0" lines for it, so only a dispatch that sent
  something, or failed, is logged. (Beat's own "Sending due task" line stays: it is
  beat's log, and what shows that beat ticks.)
* JSON: with ``KRAKEN_LOG_JSON`` (``log_json``) a worker of the queue writes one JSON object
  a line (python-json-logger), the fields above included, applied when Celery sets up the
  worker's loggers.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

from celery import signals

__all__ = ["FieldsFilter", "bind", "carry", "connect", "logger", "use_json"]

T = TypeVar("T")

_DISPATCH_DUE = "kraken_pay.dispatch_due"
_CLIENT_LOGGERS = ("kraken.pay.client", "kraken.pay.ratelimit", "kraken.pay.nonce")
_JSON_FORMAT = "%(asctime)s %(levelname)s %(name)s %(processName)s %(message)s"

_fields: contextvars.ContextVar[dict[str, str | None] | None] = contextvars.ContextVar(
    "kraken_pay_log_fields", default=None
)
_json = False
_connected = False


def bind(**fields: str | None) -> None:
    """Fields for every later record of this task (or of this coroutine and its children)."""
    _fields.set({**(_fields.get() or {}), **fields})


async def _carried(coro: Coroutine[Any, Any, T], fields: dict[str, str | None] | None) -> T:
    if fields:
        _fields.set(fields)
    return await coro


def carry(coro: Coroutine[Any, Any, T]) -> Coroutine[Any, Any, T]:
    """``coro``, to run on another thread with this thread's fields."""
    return _carried(coro, _fields.get())


def _current_task_id() -> str | None:
    from celery import current_task

    request = getattr(current_task, "request", None) if current_task else None
    return getattr(request, "id", None)


class FieldsFilter(logging.Filter):
    """Adds ``task_id`` and ``external_id`` to a record that does not have them."""

    def filter(self, record: logging.LogRecord) -> bool:
        fields = _fields.get() or {}
        if getattr(record, "task_id", None) is None:
            record.task_id = fields.get("task_id") or _current_task_id()
        if getattr(record, "external_id", None) is None:
            record.external_id = fields.get("external_id")
        return True


_FILTER = FieldsFilter()


def logger(name: str) -> logging.Logger:
    """The logger ``name``, whose records carry the fields."""
    log = logging.getLogger(name)
    if _FILTER not in log.filters:
        log.addFilter(_FILTER)
    return log


# ----------------------------------------------------------------------------- quiet beat


class _QuietDispatch(logging.Filter):
    """Drops Celery's routine lines about ``dispatch_due`` that sent nothing."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if not (isinstance(args, dict) and args.get("name") == _DISPATCH_DUE):
            return True
        if "return_value" not in args:  # "received"
            return False
        return str(args.get("return_value")) not in ("0", "None")


_QUIET = _QuietDispatch()


def quiet_dispatch(*logger_names: str) -> None:
    for name in logger_names:
        log = logging.getLogger(name)
        if _QUIET not in log.filters:
            log.addFilter(_QUIET)


# ----------------------------------------------------------------------------- JSON


def use_json(enabled: bool) -> None:
    """A worker of the queue: JSON lines (or not) when Celery sets up its loggers."""
    global _json
    _json = bool(enabled)
    quiet_dispatch("celery.app.trace", "celery.worker.strategy")
    # Celery set up the main process's loggers before worker_init; pool processes set
    # theirs up again after fork, through the signals connected below.
    for name in ("", "celery.task"):
        _json_handlers(logging.getLogger(name))


def _json_handlers(logger: logging.Logger | None = None, **_: Any) -> None:
    if not _json or logger is None:
        return
    from pythonjsonlogger.json import JsonFormatter

    for handler in logger.handlers:
        handler.setFormatter(JsonFormatter(_JSON_FORMAT))
        if _FILTER not in handler.filters:
            handler.addFilter(_FILTER)  # Celery's own records carry task_id too


def _reset_fields(task_id: str | None = None, **_: Any) -> None:
    _fields.set({"task_id": task_id, "external_id": None})


def connect() -> None:
    """Connect the handlers once; they change nothing on workers of other queues."""
    global _connected
    if _connected:
        return
    for name in _CLIENT_LOGGERS:
        logger(name)
    signals.after_setup_logger.connect(_json_handlers, weak=False)
    signals.after_setup_task_logger.connect(_json_handlers, weak=False)
    signals.task_prerun.connect(_reset_fields, weak=False)
    _connected = True
