"""``handle_callback``: one verified Kraken Pay notification, acted on once, on a worker.

The receivers (:mod:`tasks.contrib`) verify the token and queue ``callback.to_dict()``; this
task de-duplicates on ``notification_id`` (Kraken's retries, the simulator's duplicates and a
token signed again all share it), then acts, in order: the library's own reaction (the
ledger's, :func:`_ledger_reaction`: confirmed by Kraken, or paid meanwhile), the user's hook
(``KRAKEN_CALLBACK_HOOK``), and the Django signal ``payment_status_changed`` when
:mod:`tasks.contrib.django` is loaded.

De-duplication is a Redis key, ``<redis_prefix>:callback:<notification_id>``, claimed with an
atomic ``SET NX`` by the task id. Only that task (its retries and a redelivery keep the id) may
run the hooks while the claim stands; any other delivery is answered "duplicate". The key
becomes "done" for :data:`DONE_TTL` only once every reaction succeeded: a hook that raises is
retried (at most :data:`MAX_RETRIES` times), never skipped, and when the retries run out the
claim is released, so a later delivery of the same notification runs the hooks again.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from collections.abc import Callable, Mapping
from typing import Any

import redis as redis_sync
from celery import shared_task
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from kraken.pay import ConfigurationError
from kraken.pay.webhooks import InvalidCallback, PayCallback
from tasks.base import KrakenPayTask, task_name
from tasks.ledger import ledger_for

__all__ = [
    "DONE_TTL",
    "MAX_RETRIES",
    "handle_callback",
    "load_hook",
    "notification_key",
]

log = logging.getLogger("tasks.callbacks")

DONE_TTL = 4 * 86400  # seconds a handled notification is remembered (Kraken's tokens live 24 h)
CLAIM_TTL = 3600  # seconds at least a claim outlives its task's last attempt (a lost task frees it)
MAX_RETRIES = 8  # a hook that keeps raising is tried 9 times in all, then given up
_DONE = "done"

# KEYS: the key. ARGV: the claim. Deletes the key only while it still holds that claim.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

Hook = Callable[[PayCallback], Any]
_clients: dict[tuple[int, str], redis_sync.Redis] = {}


def notification_key(prefix: str, notification_id: str) -> str:
    """The notification's de-duplication key, under the ``redis_prefix`` setting."""
    return f"{prefix}:callback:{notification_id}"


def _redis(url: str) -> redis_sync.Redis:
    """One client per process and URL (a forked pool process makes its own)."""
    key = (os.getpid(), url)
    client = _clients.get(key)
    if client is None:
        # A short retry of its own: the task's retries are the long ones.
        client = _clients[key] = redis_sync.Redis.from_url(
            url,
            decode_responses=True,
            socket_connect_timeout=5,
            retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 2),
        )
    return client


def load_hook(target: str) -> Hook:
    """Import the ``module:function`` that ``KRAKEN_CALLBACK_HOOK`` names (a worker of the
    library's queue does so when it starts, so a typo stops it there)."""
    module_name, _, function_name = target.partition(":")
    try:
        function = getattr(importlib.import_module(module_name), function_name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConfigurationError(
            f"KRAKEN_CALLBACK_HOOK: cannot load {target!r}: {type(exc).__name__}"
        ) from None
    if not callable(function):
        raise ConfigurationError(f"KRAKEN_CALLBACK_HOOK: {target!r} is not callable")
    return function


def _claim_ttl(task: KrakenPayTask) -> int:
    """Long enough to outlast the wait before the next retry, so no other delivery slips in."""
    return int(max(CLAIM_TTL, 2 * task.settings.retry_max_delay + 600))


def _claim(client: redis_sync.Redis, key: str, claim: str, ttl: int) -> str:
    """``claim`` if this task may run the hooks, else what holds the key ("done" or a task)."""
    for _ in range(3):  # the holder may release between our SET and our GET
        if client.set(key, claim, nx=True, ex=ttl):
            return claim
        holder = client.get(key)
        if holder == claim:  # our own retry, or our redelivery after a lost worker
            client.expire(key, ttl)
            return claim
        if holder is not None:
            return holder
    return _DONE  # released and taken again under us: another task has it


def _django_signal(callback: PayCallback) -> None:
    """Send ``payment_status_changed`` if :mod:`tasks.contrib.django` was imported (its
    receivers import it to connect); Django is never imported from here."""
    module = sys.modules.get("tasks.contrib.django")
    if module is not None:
        module.send_payment_status_changed(callback)


def _ledger_reaction(task: KrakenPayTask, callback: PayCallback) -> str:
    """What the notification means for our cancellation, recorded in the ledger: ``cancelled``
    or ``expired`` close its entry as confirmed by Kraken; ``success`` for a request we were
    cancelling (or could not cancel) marks it "paid meanwhile", so the shop ships the order.
    Idempotent for one notification (a retry after a failed hook runs it again)."""
    answer = ledger_for(task.app).confirm(callback.external_id, callback.status)
    if answer in ("paid_meanwhile", "conflict"):
        log.warning(
            "handle_callback %s external_id=%s status=%s",
            answer,
            callback.external_id,
            callback.status,
            extra={"event": f"handle_callback.{answer}", "external_id": callback.external_id},
        )
    return answer


def _react(task: KrakenPayTask, callback: PayCallback) -> None:
    # The ledger first: a hook that asks the ledger already reads "paid meanwhile".
    _ledger_reaction(task, callback)
    target = task.settings.callback_hook
    if target:
        load_hook(target)(callback)
    _django_signal(callback)


def _outcome(callback: PayCallback, handled: bool) -> dict[str, Any]:
    log.info(
        "handle_callback external_id=%s status=%s handled=%s",
        callback.external_id,
        callback.status,
        str(handled).lower(),
        extra={
            "event": "handle_callback.outcome",
            "external_id": callback.external_id,
            "status": callback.status,
            "notification_id": callback.notification_id,
            "handled": handled,
        },
    )
    return {
        "external_id": callback.external_id,
        "status": callback.status,
        "notification_id": callback.notification_id,
        "outcome": "handled" if handled else "duplicate",
    }


def _retry_delay(task: KrakenPayTask) -> float:
    settings = task.settings
    return min(settings.retry_max_delay, settings.retry_base_delay * 2**task.request.retries)


# No result is kept: the web process that queues it never waits (its outcome is logged), and
# a result would make every publish subscribe to the result backend first.
@shared_task(
    bind=True,
    base=KrakenPayTask,
    name=task_name("handle_callback"),
    max_retries=MAX_RETRIES,
    ignore_result=True,
)
def handle_callback(self: KrakenPayTask, callback: Mapping[str, Any]) -> dict[str, Any]:
    """React once to the notification ``callback`` (``PayCallback.to_dict()``); see the
    module's docstring. The result says ``handled`` or ``duplicate``."""
    try:
        if not isinstance(callback, Mapping):
            raise InvalidCallback(
                "bad_claim", "callback: must be an object (PayCallback.to_dict())"
            )
        parsed = PayCallback.from_dict(callback)
    except InvalidCallback as exc:  # not retried: the same argument would fail again
        log.error("handle_callback refused: %s", exc, extra={"event": "handle_callback.refused"})
        raise
    client = _redis(self.settings.redis_url)
    key = notification_key(self.settings.redis_prefix, parsed.notification_id)
    claim = f"task:{self.request.id}"
    try:
        holder = _claim(client, key, claim, _claim_ttl(self))
    except redis_sync.RedisError as exc:  # nothing ran yet: try again later
        raise self.retry(exc=exc, countdown=_retry_delay(self)) from None
    if holder != claim:
        return _outcome(parsed, handled=False)
    try:
        _react(self, parsed)
    except Exception as exc:
        if self.request.retries >= MAX_RETRIES:
            client.eval(_RELEASE, 1, key, claim)  # given up: a later delivery may try again
            log.error(
                f"handle_callback failed: {type(exc).__name__} external_id=%s status=%s",
                parsed.external_id,
                parsed.status,
                extra={"event": "handle_callback.failed", "error_class": type(exc).__name__},
            )
            raise
        raise self.retry(exc=exc, countdown=_retry_delay(self)) from None
    client.set(key, _DONE, ex=DONE_TTL)
    return _outcome(parsed, handled=True)
