"""The ledger: every cancellation asked for, kept in Redis until Kraken's final answer.

A cancellation is recorded before anything is published, and stays *open* until Kraken says
``cancelled``, ``already_cancelled``, ``not_cancellable`` or ``not_found``, or it fails for
good. Each open entry has a deadline, "news expected by": asking sets it a grace period
ahead; a worker that starts an attempt, waits for a retry or works through a chunk moves it
to when that should be over. Beat's relay (``dispatch_due``) claims the entries whose
deadline passed and sends them again, so a message lost anywhere (in the web process, the
broker or a worker) costs one deadline, never the cancellation. A scheduled cancellation is
an open entry whose deadline is its due time: one claim-and-lease serves both.

Keys, all under the ``redis_prefix`` setting (apps sharing a Redis use prefixes of their own):

* ``<p>:ledger:open``   hash, external id -> the entry (JSON)
* ``<p>:ledger:due``    sorted set, external id -> deadline (Redis's clock, unix seconds)
* ``<p>:ledger:closed`` hash, external id -> the final record (JSON), kept ``RETENTION``
* ``<p>:ledger:closed_at`` sorted set, external id -> when it closed, to trim the closed hash

Every change is one Lua script, atomic, on Redis's own ``TIME``. Redis must keep what it is
told: AOF, and no ``allkeys-*`` eviction (``tasks/worker.py`` warns at start).
"""

from __future__ import annotations

import json
import os
import threading
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import redis as redis_sync

from tasks import ledger_scripts as scripts

__all__ = ["RETENTION", "Entry", "Ledger", "NotRecorded", "ledger_for"]

RETENTION = 7 * 86400.0  # seconds a closed record is kept (webhooks may confirm it late)
_MAX_BACKOFF_DOUBLINGS = 5  # a re-sent entry waits grace * 2**sends, at most 32 graces


class NotRecorded(ConnectionError):
    """The cancellation could not be recorded (Redis does not answer), so nothing was sent:
    the caller must try again."""


@dataclass(frozen=True)
class Entry:
    """An open cancellation, as the ledger holds it."""

    external_id: str
    state: str
    attempts: int = 0
    ambiguous: bool = False
    sends: int = 0
    task_id: str | None = None
    first_at: float | None = None
    asked_at: float | None = None
    last_error: str | None = None

    @classmethod
    def from_json(cls, external_id: str, raw: str | bytes) -> Entry:
        data = json.loads(raw)
        fields = {k: data.get(k) for k in cls.__dataclass_fields__ if k != "external_id"}
        fields = {k: v for k, v in fields.items() if v is not None}
        return cls(external_id, **fields)


class Ledger:
    """The ledger of one app (one Redis, one prefix)."""

    def __init__(self, redis: redis_sync.Redis, prefix: str = "kraken") -> None:
        self.redis = redis
        base = f"{prefix}:ledger"
        self.open_key, self.due_key = f"{base}:open", f"{base}:due"
        self.closed_key, self.closed_at_key = f"{base}:closed", f"{base}:closed_at"
        self._scripts = {
            name: redis.register_script(source)
            for name, source in (
                ("ask", scripts.ASK),
                ("begin", scripts.BEGIN),
                ("hold", scripts.HOLD),
                ("close", scripts.CLOSE),
                ("claim", scripts.CLAIM),
                ("unschedule", scripts.UNSCHEDULE),
                ("confirm", scripts.CONFIRM),
            )
        }

    def _keys(self, n: int) -> list[str]:
        return [self.open_key, self.due_key, self.closed_key, self.closed_at_key][:n]

    def ask(
        self,
        external_ids: Sequence[str],
        *,
        within: float | None = None,
        at: float | None = None,
        task_id: str | None = None,
        scheduled: bool = False,
    ) -> float:
        """Record cancellations: news expected ``within`` seconds, or due ``at`` (unix time).
        Returns the deadline. Raises :class:`NotRecorded` when Redis does not take it."""
        mode, seconds = ("at", at) if at is not None else ("in", within or 0.0)
        state = "scheduled" if scheduled else "queued"
        args = [state, task_id or "", mode, repr(float(seconds)), *external_ids]
        try:
            return float(self._scripts["ask"](keys=self._keys(3), args=args))
        except redis_sync.RedisError as exc:
            raise NotRecorded(
                f"the ledger did not record {len(external_ids)} cancellation(s) "
                f"({type(exc).__name__}); nothing was sent"
            ) from None

    def begin(
        self, external_ids: Sequence[str], hold: float, task_id: str | None = None
    ) -> dict[str, Entry | dict[str, Any]]:
        """A worker starts on ``external_ids``: per id, its open :class:`Entry`, or the final
        record (a dict) of one that is already closed."""
        args = [task_id or "", repr(float(hold)), *external_ids]
        out = self._scripts["begin"](keys=self._keys(3), args=args)
        result: dict[str, Entry | dict[str, Any]] = {}
        pairs = zip(out[::2], out[1::2], strict=True)
        for eid, (kind, raw) in zip(external_ids, pairs, strict=True):
            is_open = (kind.decode() if isinstance(kind, bytes) else kind) == "open"
            result[eid] = Entry.from_json(eid, raw) if is_open else json.loads(raw)
        return result

    def hold(
        self,
        external_ids: Iterable[str],
        seconds: float,
        *,
        state: str = "waiting",
        ambiguous: bool | None = None,
        last_error: str | None = None,
    ) -> None:
        """News of these open ids is expected ``seconds`` from now (a retry, a hand-off)."""
        ids = list(external_ids)
        if ids:
            flag = "" if ambiguous is None else ("1" if ambiguous else "0")
            args = [repr(float(seconds)), state, flag, (last_error or "")[:200], *ids]
            self._scripts["hold"](keys=self._keys(2), args=args)

    def close(self, records: Iterable[tuple[str, dict[str, Any]]]) -> int:
        """Kraken's final answer (or a terminal failure) for each ``(id, record)``."""
        args: list[str] = []
        for eid, record in records:
            args += [eid, json.dumps(record, separators=(",", ":"))]
        return int(self._scripts["close"](keys=self._keys(4), args=args)) if args else 0

    def claim_due(self, limit: int, grace: float) -> list[Entry]:
        """Take up to ``limit`` entries whose deadline passed, each leased for a while."""
        args = [limit, repr(float(grace)), _MAX_BACKOFF_DOUBLINGS]
        out = self._scripts["claim"](keys=self._keys(2), args=args)
        pairs = zip(out[::2], out[1::2], strict=True)
        return [Entry.from_json(eid.decode(), raw) for eid, raw in pairs]

    def confirm(self, external_id: str, status: str) -> str:
        """What Kraken's notification ``status`` (``cancelled``, ``expired``, ``success``...)
        means for our cancellation of ``external_id``; the ledger records it. Returns
        ``confirmed``, ``paid_meanwhile``, ``conflict`` or ``unknown``."""
        answer = self._scripts["confirm"](keys=self._keys(4), args=[external_id, status])
        return answer.decode() if isinstance(answer, bytes) else str(answer)

    def unschedule(self, external_id: str) -> bool:
        return bool(self._scripts["unschedule"](keys=self._keys(2), args=[external_id]))

    def scheduled(self, limit: int | None = None) -> list[tuple[str, float]]:
        """The ids still only scheduled, soonest first, with their due times."""
        found: list[tuple[str, float]] = []
        start, page = 0, 1000
        while limit is None or len(found) < limit:
            chunk = self.redis.zrange(self.due_key, start, start + page - 1, withscores=True)
            if not chunk:
                break
            raws = self.redis.hmget(self.open_key, [eid for eid, _ in chunk])
            for (eid, due), raw in zip(chunk, raws, strict=True):
                if raw and json.loads(raw).get("state") == "scheduled":
                    found.append((eid.decode(), due))
            start += page
        return found[:limit] if limit is not None else found

    def closed(self, external_id: str) -> dict[str, Any] | None:
        raw = self.redis.hget(self.closed_key, external_id)
        return json.loads(raw) if raw else None

    def entry(self, external_id: str) -> Entry | None:
        raw = self.redis.hget(self.open_key, external_id)
        return Entry.from_json(external_id, raw) if raw else None

    def open_count(self) -> int:
        return int(self.redis.hlen(self.open_key))

    def trim(self, retention: float = RETENTION) -> int:
        """Forget closed records older than ``retention`` seconds (beat's relay does this)."""
        seconds, micros = self.redis.time()
        cutoff = seconds + micros / 1e6 - retention
        old = self.redis.zrangebyscore(self.closed_at_key, "-inf", cutoff, start=0, num=10_000)
        if old:
            self.redis.hdel(self.closed_key, *old)
            self.redis.zrem(self.closed_at_key, *old)
        return len(old)


_ledgers: dict[tuple[int, str, str], Ledger] = {}
_ledgers_lock = threading.Lock()


_overrides: weakref.WeakKeyDictionary[Any, Ledger] = weakref.WeakKeyDictionary()


def override(app: Any, ledger: Ledger | None) -> None:
    """Use ``ledger`` for ``app`` (tests: a fakeredis one); ``None`` undoes it."""
    if ledger is None:
        _overrides.pop(app, None)
    else:
        _overrides[app] = ledger


def ledger_for(app: Any = None) -> Ledger:
    """The ledger of ``app`` (default: Celery's current app): its ``redis_url`` and
    ``redis_prefix``; one Redis client per process (a forked child makes its own)."""
    from celery import current_app

    from tasks.settings import settings_for

    app = app if app is not None else current_app._get_current_object()
    if app in _overrides:
        return _overrides[app]
    settings = settings_for(app)
    key = (os.getpid(), settings.redis_url, settings.redis_prefix)
    with _ledgers_lock:
        ledger = _ledgers.get(key)
        if ledger is None:
            client = redis_sync.Redis.from_url(settings.redis_url)
            ledger = _ledgers[key] = Ledger(client, settings.redis_prefix)
        return ledger
