"""``kraken-pay cancel``: queue cancellations, wait for their outcomes, or make them --direct.

A --direct cancellation is one call per id from this process, with the client a worker
builds (:func:`tasks.runtime.build_client`): nonces and the key's turn from the workers'
Redis, and the key's shared rate budget, so it never pushes the key over Kraken's limit
while the workers run. Only without a Redis that answers do its nonces come from this
host's clock; the workers cannot run without that Redis either.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import click

from kraken.pay import KrakenError
from kraken_pay_cli.app import (
    EXIT_CONFIG,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_UNREACHABLE,
    CommandError,
    describe,
    error,
    exit_code_for,
    parse_ids,
    redact,
    release_results,
    settings,
    standalone,
)
from kraken_pay_cli.probes import check_broker, check_redis, redis_answers

__all__ = ["Outcome", "cancel", "direct_client", "print_outcomes", "require_celery"]

# Publishing gives up after about a second when the broker does not answer, instead of
# Celery's default of retrying for longer, so a shell user hears about it at once.
PUBLISH_RETRY = {"max_retries": 2, "interval_start": 0.2, "interval_step": 0.4}

Outcome = dict[str, Any] | BaseException


@click.command()
@click.argument("ids", nargs=-1, required=True, metavar="ID...")
@click.option("--wait", is_flag=True, help="Wait for each outcome and print it.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=60.0,
    show_default=True,
    help="Seconds --wait waits for all outcomes.",
)
@click.option(
    "--direct",
    is_flag=True,
    help="Call Kraken from this process, once per id, without Celery or retries.",
)
@click.option("--queue", help="The Celery queue to send to (default: the app's default queue).")
def cancel(
    ids: tuple[str, ...], wait: bool, timeout: float, direct: bool, queue: str | None
) -> int:
    """Queue the cancellation of payment requests ID... (base64 ids or UUIDs).

    Every id is checked before anything is queued. With --direct, a one-off from a shell,
    the client is a worker's: nonces, the key's turn and its rate budget come from the
    workers' Redis when REDIS_URL answers; else nonces come from this host's clock.
    """
    eids = parse_ids(ids)
    if direct:
        return print_outcomes(asyncio.run(_cancel_direct(eids)))
    from tasks import cancel_request

    require_celery()
    options = {"retry_policy": PUBLISH_RETRY} | ({"queue": queue} if queue else {})
    queued = [(eid, cancel_request.apply_async((eid,), **options)) for eid in eids]
    if not wait:
        for eid, result in queued:
            click.echo(f"{eid}  queued  task {result.id}")
        return EXIT_OK
    return print_outcomes(_wait_for(queued, timeout))


def require_celery() -> None:
    """Fail in one line, at once, when the broker or the result backend does not answer.

    Celery itself would retry for many seconds and end with a long message.
    """
    app = standalone()
    settings()  # a bad setting is refused before anything is sent, in one line
    findings = [check_broker(app.conf.broker_url)]
    backend = str(app.conf.result_backend or "")
    if backend.startswith(("redis://", "rediss://", "unix://")):
        findings.append(check_redis(backend, "result backend"))
    for finding in findings:
        if not finding.ok:
            raise CommandError(f"{finding.name}: {finding.detail}", EXIT_UNREACHABLE)


def _wait_for(queued: list[tuple[str, Any]], timeout: float) -> list[tuple[str, Outcome]]:
    from celery.exceptions import TimeoutError as CeleryTimeout

    deadline = time.monotonic() + timeout
    outcomes: list[tuple[str, Outcome]] = []
    try:
        for eid, result in queued:
            try:
                wait = max(0.01, deadline - time.monotonic())
                value = result.get(timeout=wait, propagate=False)
            except CeleryTimeout:
                value = TimeoutError(f"no outcome within {timeout:g}s (is a worker running?)")
            outcomes.append((eid, value))
    finally:
        release_results()  # also on Ctrl-C
    return outcomes


def print_outcomes(outcomes: list[tuple[str, Outcome]]) -> int:
    """One line per id; the exit status of the worst failure."""
    code = EXIT_OK
    for eid, value in outcomes:
        if isinstance(value, BaseException):
            click.echo(f"{eid}  failed  {describe(value)}")
            worst = EXIT_CONFIG if exit_code_for(value) == EXIT_CONFIG else EXIT_FAILED
            code = max(code, worst)
        else:
            click.echo(f"{eid}  {_outcome_text(value)}")
    return code


def _outcome_text(result: dict[str, Any]) -> str:
    notes = [f"attempts: {result.get('attempts', 1)}"]
    if result.get("confirmed_on_retry"):
        notes.insert(0, "confirmed on retry")
    return f"{result['outcome']}  ({', '.join(notes)})"


# ----------------------------------------------------------------------------- --direct


async def direct_client(resolved: Any) -> Any:
    """The client of a --direct cancel: a worker's (shared nonces, turn and rate budget) when
    the workers' Redis answers, else one with this host's clock for nonces."""
    from kraken.pay import ClockNonce, KrakenPayClient
    from tasks.runtime import build_client, client_options

    if await asyncio.to_thread(redis_answers, resolved.redis_url):
        return await build_client(resolved)
    url = redact(resolved.redis_url)
    error(f"kraken-pay: note: no Redis at {url}; nonces from this host's clock")
    return KrakenPayClient(resolved.credentials(), nonce=ClockNonce(), **client_options(resolved))


async def _cancel_direct(eids: list[str]) -> list[tuple[str, Outcome]]:
    """One call per id from this process; stops at the first error that would repeat."""
    from tasks.runtime import close_client

    resolved = settings()
    resolved.credentials()  # refused in one line before anything is built
    client = await direct_client(resolved)
    try:
        return [(eid, await _cancel_once(client, eid)) for eid in eids]
    finally:
        await close_client(client)


async def _cancel_once(client: Any, eid: str) -> Outcome:
    from kraken.pay import PayRequestError
    from tasks import OUTCOMES

    try:
        result = await client.cancel_request(eid)
    except PayRequestError as exc:
        if exc.reason in OUTCOMES:
            return {"external_id": eid, "outcome": exc.reason, "attempts": 1}
        return exc
    except KrakenError as exc:
        if exit_code_for(exc) in (EXIT_CONFIG, EXIT_UNREACHABLE):
            raise  # the next id would meet the same wall: one line and the status
        return exc
    return {"external_id": eid, "outcome": "cancelled", "attempts": 1, "result": result}
