"""``kraken-pay check``: what is wrong, before a worker fails, beyond "it answers".

* The key: one signed cancel of a fresh random external id, which Kraken answers "not
  found". It draws its nonce from the workers' own Redis sequence, inside the key's turn
  and under the shared rate budget (the workers' client, built the same way), so it never
  makes a worker's nonce stale. The class of the answer says what is wrong: the key, the
  signature (the secret), or the key's permissions. This is the only HTTP request the
  check makes; the tasks themselves build none, their client does (``kraken.pay``).
* The fleet: whether a worker consumes the library's queue (a broadcast to the workers,
  answered within a second), and whether beat ran ``dispatch_due`` recently (each run
  leaves a heartbeat in Redis, :data:`tasks.checks.HEARTBEAT_KEY`).
* Redis: the ledger, schedule and nonces must survive a restart and never be evicted, so no
  AOF or an ``allkeys-*`` eviction policy is a warning.

Warnings do not change the exit status; failures do.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import click
import redis

from kraken.pay import (
    AuthenticationError,
    ConfigurationError,
    InvalidNonce,
    KrakenError,
    PayRequestError,
    TransportError,
    normalize_external_id,
)
from kraken_pay_cli.app import (
    EXIT_CONFIG,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_UNREACHABLE,
    is_default,
    settings,
    standalone,
)
from kraken_pay_cli.probes import CHECK_TIMEOUT, Finding, check_broker, check_clock, check_redis

__all__ = ["check", "check_beat", "check_key", "check_redis_safety", "check_workers"]

_INSPECT_TIMEOUT = 1.0

# Kraken's authentication errors, by what the person at the shell must fix.
_REFUSALS = {
    "EAPI:Invalid key": "refused key: Kraken does not know KRAKEN_API_KEY",
    "EAPI:Invalid signature": "refused signature: KRAKEN_API_SECRET is not this key's secret",
    "EGeneral:Permission denied": (
        "permission: the key lacks 'Funds permissions - Query', which cancelling needs"
    ),
    "EAPI:Feature disabled": "permission: Kraken Pay is disabled for this key",
}


@click.command()
@click.option(
    "--max-skew",
    type=click.FloatRange(min=0),
    default=1.0,
    show_default=True,
    help="Seconds this host's clock may differ from Redis's.",
)
def check(max_skew: float) -> int:
    """Say what is wrong before a worker fails: credentials, Redis, broker, the key, clock,
    Redis persistence and eviction, beat, workers.

    Reads the same environment as a worker. The key is proved by one signed cancel of a
    random id (Kraken answers "not found"), its nonce drawn from the workers' Redis so it
    never disturbs them. The secret is never printed: only how many bytes it decodes to.
    Warnings (no worker, no beat, no AOF) keep the exit status 0; otherwise it is that of
    the most basic problem (3, then 4, then 1).
    """
    try:
        resolved = settings(note=False)
    except ConfigurationError as exc:
        findings = [Finding("settings", str(exc), EXIT_CONFIG)]
    else:
        findings = _findings(resolved, max_skew)
    for finding in findings:
        click.echo(finding.line())
    problems = [f for f in findings if not f.ok]
    warnings = [f.name for f in findings if f.warning]
    if not problems:
        listed = ", ".join(warnings)
        click.echo(f"works, {len(warnings)} warning(s): {listed}" if warnings else "all is well")
        return EXIT_OK
    click.echo(f"{len(problems)} problem(s): {', '.join(f.name for f in problems)}")
    # The most basic problem first: a bad key, then what cannot be reached, then the rest.
    codes = {f.failure for f in problems}
    return next(code for code in (EXIT_CONFIG, EXIT_UNREACHABLE, EXIT_FAILED) if code in codes)


def _findings(resolved: Any, max_skew: float) -> list[Finding]:
    credentials = _check_credentials(resolved)
    store = check_redis(resolved.redis_url)
    if is_default("REDIS_URL"):
        store.detail += " (default: REDIS_URL is not set)"
    app = standalone()
    broker = check_broker(app.conf.broker_url)
    broker.detail += _broker_note()
    if not credentials.ok:
        api = Finding("api", "not called: no usable credentials", warning=True)
    elif not store.ok:
        api = Finding(
            "api", "not called: its nonce must come from the workers' Redis", EXIT_UNREACHABLE
        )
    else:
        api = check_key(resolved)
    findings = [credentials, store, broker, api]
    if store.ok:
        findings.append(check_clock(resolved.redis_url, max_skew))
        client = redis.Redis.from_url(resolved.redis_url, socket_timeout=CHECK_TIMEOUT)
        try:
            findings += check_redis_safety(client)
            findings.append(check_beat(client, resolved.schedule_interval, resolved.redis_prefix))
        finally:
            client.close()
    if broker.ok:
        findings.append(check_workers(app, resolved.queue))
    return findings


def _broker_note() -> str:
    """Where the standalone app's broker URL came from, when not from CELERY_BROKER_URL."""
    if not is_default("CELERY_BROKER_URL"):
        return ""
    if is_default("REDIS_URL"):
        return " (default: neither CELERY_BROKER_URL nor REDIS_URL is set)"
    return " (REDIS_URL: CELERY_BROKER_URL is not set)"


def _check_credentials(resolved: Any) -> Finding:
    from tasks.checks import secret_warning

    try:
        credentials = resolved.credentials()
    except ConfigurationError as exc:
        return Finding("credentials", str(exc), EXIT_CONFIG)
    size = credentials.secret_size
    short = secret_warning(size)
    return Finding(
        "credentials",
        f"KRAKEN_API_KEY is set (key id {credentials.key_id}); "
        + (short or f"KRAKEN_API_SECRET decodes to {size} bytes"),
        warning=short is not None,
    )


# ----------------------------------------------------------------------------- the key


def check_key(resolved: Any) -> Finding:
    """A signed cancel of a random id; what Kraken answers says whether the key works."""
    started = time.perf_counter()
    try:
        answer = asyncio.run(_probe(resolved))
    except KrakenError as exc:
        return _refusal(resolved.api_url, exc)
    took = f"{(time.perf_counter() - started) * 1000:.0f} ms"
    return Finding(
        "api",
        f"{resolved.api_url}: accepted: a signed cancel of a random id was answered "
        f"{answer!r}, so the key, the secret and the permission are good ({took})",
    )


async def _probe(resolved: Any) -> str:
    from tasks.runtime import build_client, close_client

    client = await build_client(resolved)  # the workers' nonces, turn and budget
    try:
        await client.cancel_request(normalize_external_id(uuid.uuid4()))
    except PayRequestError as exc:
        return exc.reason or exc.code or "an answer about the request"
    finally:
        await close_client(client)
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


def check_beat(client: Any, interval: float, prefix: str = "kraken") -> Finding:
    """Whether beat sent ``dispatch_due`` lately (and a worker ran it)."""
    from tasks.checks import beat_heartbeat

    recent = max(10.0, 5 * interval)
    try:
        age = beat_heartbeat(client, prefix)
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


def check_redis_safety(client: Any) -> list[Finding]:
    """Persistence and eviction: what a restart or memory pressure would cost."""
    findings = []
    try:
        persistence = client.info("persistence")
        memory = client.info("memory")
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
