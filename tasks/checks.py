"""What ``kraken-pay check`` proves beyond "it answers": the key, the fleet, Redis's safety.

* The key: one signed cancel of a fresh random external id, which Kraken answers "not
  found". It draws its nonce from the workers' own Redis sequence, inside the key's turn
  and under the shared rate budget (the workers' client, built the same way), so it never
  makes a worker's nonce stale. The class of the answer says what is wrong: the key, the
  signature (the secret), or the key's permissions.
* The fleet: whether a worker consumes the library's queue (a broadcast to the workers,
  answered within a second), and whether beat ran ``dispatch_due`` recently (each run
  leaves a heartbeat in Redis, :data:`HEARTBEAT_KEY`).
* Redis: the ledger, schedule and nonces must survive a restart and never be evicted, so no
  AOF or an ``allkeys-*`` eviction policy is a warning.

Warnings do not change the exit status; failures do.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from typing import Any

from kraken.pay import KrakenError, normalize_external_id
from kraken.pay.errors import AuthenticationError, InvalidNonce, PayRequestError, TransportError

__all__ = [
    "HEARTBEAT_KEY",
    "KRAKEN_SECRET_BYTES",
    "Finding",
    "beat_heartbeat",
    "check_beat",
    "check_key",
    "check_redis_safety",
    "check_workers",
    "is_default",
    "record_heartbeat",
]

# The exit statuses of tasks/cli.py (tests/test_checks.py keeps them equal).
EXIT_FAILED, EXIT_CONFIG, EXIT_UNREACHABLE = 1, 3, 4

KRAKEN_SECRET_BYTES = 64  # what Kraken's API secrets decode to
HEARTBEAT_KEY = "{prefix}:dispatch_due:heartbeat"  # Redis TIME of the last dispatch_due run
HEARTBEAT_TTL = 86400
_INSPECT_TIMEOUT = 1.0

# KEYS: heartbeat. ARGV: ttl. Stores Redis's own time, the clock check compares with.
_HEARTBEAT = """
local t = redis.call('TIME')
redis.call('SET', KEYS[1], t[1] .. '.' .. string.format('%06d', tonumber(t[2])), 'EX', ARGV[1])
return 1
"""

# Kraken's authentication errors, by what the person at the shell must fix.
_REFUSALS = {
    "EAPI:Invalid key": "refused key: Kraken does not know KRAKEN_API_KEY",
    "EAPI:Invalid signature": "refused signature: KRAKEN_API_SECRET is not this key's secret",
    "EGeneral:Permission denied": (
        "permission: the key lacks 'Funds permissions - Query', which cancelling needs"
    ),
    "EAPI:Feature disabled": "permission: Kraken Pay is disabled for this key",
}


class Finding:
    """One line of ``kraken-pay check``: what was checked, whether it is fine, and why."""

    def __init__(
        self, name: str, detail: str, failure: int | None = None, *, warning: bool = False
    ) -> None:
        self.name = name
        self.detail = detail
        self.failure = failure  # the exit status this problem means, None when all is well
        self.warning = warning and failure is None

    @property
    def ok(self) -> bool:
        return self.failure is None

    def line(self) -> str:
        mark = "FAIL" if not self.ok else "warn" if self.warning else "ok"
        return f"{mark:<5} {self.name:<12} {self.detail}"


# ----------------------------------------------------------------------------- the key


def secret_warning(size: int) -> str | None:
    if size >= KRAKEN_SECRET_BYTES:
        return None
    return (
        f"KRAKEN_API_SECRET decodes to {size} bytes; Kraken's secrets decode to "
        f"{KRAKEN_SECRET_BYTES} (is it cut short, or another service's?)"
    )


def check_key(settings: Any) -> Finding:
    """A signed cancel of a random id; what Kraken answers says whether the key works."""
    started = time.perf_counter()
    try:
        answer = asyncio.run(_probe(settings))
    except KrakenError as exc:
        return _refusal(settings.api_url, exc)
    took = f"{(time.perf_counter() - started) * 1000:.0f} ms"
    return Finding(
        "api",
        f"{settings.api_url}: accepted: a signed cancel of a random id was answered "
        f"{answer!r}, so the key, the secret and the permission are good ({took})",
    )


async def _probe(settings: Any) -> str:
    from tasks.runtime import _close_client, build_client

    client = await build_client(settings)  # the workers' nonces, turn and budget
    try:
        await client.cancel_request(normalize_external_id(uuid.uuid4()))
    except PayRequestError as exc:
        return exc.reason or exc.code or "an answer about the request"
    finally:
        await _close_client(client)
    return "cancelled"  # a random id that existed: still proof the key works


def _refusal(url: str, exc: KrakenError) -> Finding:
    code = exc.code or ""
    if isinstance(exc, AuthenticationError):
        why = _REFUSALS.get(code, f"refused: {code or exc.message}")
        return Finding("api", f"{url}: {why} ({code})", EXIT_CONFIG)
    if isinstance(exc, InvalidNonce):
        return Finding(
            "api",
            f"{url}: nonce refused: another client signs with this key using larger nonces, "
            "or the workers use another Redis",
            EXIT_FAILED,
        )
    if isinstance(exc, TransportError) and not exc.ambiguous:
        return Finding("api", f"{url} does not answer: {exc.message}", EXIT_UNREACHABLE)
    return Finding("api", f"{url}: {type(exc).__name__}: {code or exc.message}", EXIT_FAILED)


# ----------------------------------------------------------------------------- the fleet


def check_workers(app: Any, queue: str) -> Finding:
    """Whether a worker consumes ``queue``; a warning when none answers within a second."""
    try:
        replies = app.control.inspect(timeout=_INSPECT_TIMEOUT).active_queues() or {}
    except Exception as exc:  # the broker went away between the checks
        return Finding("workers", f"cannot ask the workers: {type(exc).__name__}", warning=True)
    serving = sorted(
        name for name, queues in replies.items() if any(q.get("name") == queue for q in queues)
    )
    if not serving:
        others = f" ({len(replies)} other worker(s) answered)" if replies else ""
        return Finding(
            "workers", f"no worker consumes {queue}: nothing is cancelled{others}", warning=True
        )
    shown = ", ".join(serving[:5]) + (f" and {len(serving) - 5} more" if len(serving) > 5 else "")
    return Finding("workers", f"{len(serving)} consume {queue}: {shown}")


def record_heartbeat(redis: Any, prefix: str = "kraken") -> None:
    """``dispatch_due`` ran: beat is alive and a worker takes its tasks."""
    key = HEARTBEAT_KEY.format(prefix=prefix)
    redis.register_script(_HEARTBEAT)(keys=[key], args=[HEARTBEAT_TTL])


def beat_heartbeat(redis: Any, prefix: str = "kraken") -> float | None:
    """Seconds since ``dispatch_due`` last ran (by Redis's clock), or ``None`` if never."""
    raw = redis.get(HEARTBEAT_KEY.format(prefix=prefix))
    if raw is None:
        return None
    seconds, micros = redis.time()
    return max(0.0, seconds + micros / 1e6 - float(raw))


def check_beat(redis: Any, interval: float, prefix: str = "kraken") -> Finding:
    """Whether beat sent ``dispatch_due`` lately (and a worker ran it)."""
    recent = max(10.0, 5 * interval)
    try:
        age = beat_heartbeat(redis, prefix)
    except Exception as exc:
        return Finding("beat", f"cannot read the heartbeat: {type(exc).__name__}", warning=True)
    if age is None:
        return Finding(
            "beat",
            "dispatch_due never ran (no heartbeat in Redis): is beat running? scheduled "
            "cancellations wait until it does",
            warning=True,
        )
    if age > recent:
        return Finding(
            "beat", f"dispatch_due last ran {age:.0f}s ago: is beat still running?", warning=True
        )
    return Finding("beat", f"dispatch_due ran {age:.1f}s ago")


# ----------------------------------------------------------------------------- Redis


def check_redis_safety(redis: Any) -> list[Finding]:
    """Persistence and eviction: what a restart or memory pressure would cost."""
    findings = []
    try:
        persistence = redis.info("persistence")
        memory = redis.info("memory")
    except Exception as exc:  # INFO may be renamed or refused on a managed Redis
        return [Finding("persistence", f"cannot read INFO: {type(exc).__name__}", warning=True)]
    if not int(persistence.get("aof_enabled", 0)):
        findings.append(
            Finding(
                "persistence",
                "no AOF (appendonly no): a restart loses scheduled cancellations and, with a "
                "Redis broker, queued ones; set appendonly yes",
                warning=True,
            )
        )
    else:
        findings.append(Finding("persistence", "AOF on"))
    policy = str(memory.get("maxmemory_policy", "noeviction"))
    if policy.startswith("allkeys-"):
        findings.append(
            Finding(
                "eviction",
                f"maxmemory-policy {policy} may evict schedules, nonces and queued tasks; use "
                "noeviction (or volatile-*)",
                warning=True,
            )
        )
    else:
        findings.append(Finding("eviction", f"maxmemory-policy {policy}"))
    return findings


def is_default(variable: str) -> bool:
    """Whether the environment leaves ``variable`` to its default."""
    return not os.environ.get(variable, "").strip()


def broker_note() -> str:
    """Where the standalone app's broker URL came from, when not from CELERY_BROKER_URL."""
    if not is_default("CELERY_BROKER_URL"):
        return ""
    if is_default("REDIS_URL"):
        return " (default: neither CELERY_BROKER_URL nor REDIS_URL is set)"
    return " (REDIS_URL: CELERY_BROKER_URL is not set)"
