"""What a database store's relay does with one overdue row, from what the Redis ledger says.

Shared by the Django and the SQLAlchemy stores: the row is the durable intent, written in
the user's transaction; the Redis ledger tracks the work.
"""

from __future__ import annotations

import logging
from typing import Any, Literal, NamedTuple

from tasks.ledger import Ledger

__all__ = ["MAX_DOUBLINGS", "Decision", "closed_fields", "decide", "publish", "resend_after"]

log = logging.getLogger("tasks.contrib")

MAX_DOUBLINGS = 5  # a row sent again waits grace * 2**sends, at most 32 graces


class Decision(NamedTuple):
    action: Literal["close", "wait", "send"]
    record: dict[str, Any] | None = None  # the final record, for "close"
    attempts: int = 0
    last_error: str = ""


def decide(ledger: Ledger, external_id: str) -> Decision:
    """``close`` (the ledger has Kraken's answer), ``wait`` (at work), or ``send`` (the ledger
    never heard of it, or has it only scheduled: the publish after the commit was lost)."""
    closed = ledger.closed(external_id)
    if closed:
        return Decision("close", closed)
    entry = ledger.entry(external_id)
    if entry is not None and entry.state != "scheduled":
        return Decision("wait", None, entry.attempts, entry.last_error or "")
    return Decision("send")


def resend_after(grace: float, sends: int) -> float:
    """Seconds until a row sent ``sends`` times is looked at again."""
    return grace * 2 ** min(sends, MAX_DOUBLINGS)


def closed_fields(record: dict[str, Any]) -> dict[str, Any]:
    """A row's columns for Kraken's final answer (or a failure for good)."""
    failed = record.get("outcome") == "failed"
    return {
        "state": "failed" if failed else "closed",
        "outcome": str(record.get("outcome") or "")[:32],
        "attempts": int(record.get("attempts") or 0),
        "last_error": str(record.get("kraken_error") or record.get("error") or "")[:200],
    }


def publish(eid: str) -> None:
    """After the row's commit: queue the cancellation. A failure is logged, not raised: the
    row is committed, and the store's relay sends it."""
    from tasks import cancel_request

    try:
        cancel_request.delay(eid)
    except Exception as exc:
        log.warning(
            "cancellation committed but not queued, the relay sends it external_id=%s error=%s",
            eid,
            type(exc).__name__,
            extra={"event": "store.unpublished", "external_id": eid},
        )
