"""The ``kraken-pay`` command: queue, run, schedule and check cancellations from a shell.

Every error is one line on stderr, never a traceback, and the exit status says what went
wrong (listed in ``kraken-pay --help``). The API secret is never printed: configuration
errors name the variable, not its value, and URLs are shown without their passwords.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from typing import Any, BinaryIO

import click

from kraken.pay import KrakenError, normalize_external_id
from kraken.pay.errors import AuthenticationError, ConfigurationError, TransportError
from tasks import idfile
from tasks.checks import Finding

__all__ = [
    "EXIT_CONFIG",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_UNREACHABLE",
    "EXIT_USAGE",
    "cli",
    "main",
]

EXIT_OK = 0  # everything asked for was done (an outcome such as not_found counts as done)
EXIT_FAILED = 1  # some cancellations failed, or did not finish in time; a check failed
EXIT_USAGE = 2  # bad usage or bad input: an unknown option, a malformed id, an unreadable file
EXIT_CONFIG = 3  # configuration: credentials missing, undecodable or refused by Kraken
EXIT_UNREACHABLE = 4  # cannot reach Redis, the broker or the API (or cannot listen on a port)
EXIT_INTERRUPTED = 130  # Ctrl-C or SIGTERM; everything the command started was stopped

EXIT_CODES_HELP = """\b
Exit status:
  0    everything asked for was done
  1    some cancellations failed or did not finish in time; a check failed
  2    bad usage or input (unknown option, malformed id, unreadable file)
  3    configuration: credentials missing, undecodable, or refused by Kraken
  4    cannot reach Redis, the broker or the API
  130  interrupted (Ctrl-C, SIGTERM)
"""

_HINTS = {
    EXIT_CONFIG: " (check KRAKEN_API_KEY and KRAKEN_API_SECRET; `kraken-pay check` says more)",
    EXIT_UNREACHABLE: " (`kraken-pay check` says what answers and what does not)",
}

_PASSWORD_IN_URL = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:/@\s]*):[^@/\s]*@")


class CommandError(click.ClickException):
    """An error the user can act on: one line on stderr and an exit status of its own."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def redact(text: str) -> str:
    """``text`` with the password of every URL in it replaced by ``***``."""
    return _PASSWORD_IN_URL.sub(r"\g<scheme>\g<user>:***@", text)


def exit_code_for(exc: BaseException) -> int:
    """The exit status that says what ``exc`` means to the person at the shell."""
    from kombu.exceptions import OperationalError
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    if isinstance(exc, ConfigurationError | AuthenticationError):
        return EXIT_CONFIG
    if isinstance(exc, ValueError):  # InvalidExternalId and other bad input
        return EXIT_USAGE
    if isinstance(exc, TransportError) and not exc.ambiguous:  # never reached Kraken
        return EXIT_UNREACHABLE
    unreachable = (OperationalError, RedisConnectionError, RedisTimeoutError, OSError)
    if isinstance(exc, unreachable):
        return EXIT_UNREACHABLE
    return EXIT_FAILED


def describe(exc: BaseException) -> str:
    """One line about ``exc``: its class and message, passwords removed."""
    message = " ".join(str(exc).split())
    if isinstance(exc, CommandError | ConfigurationError):
        return redact(message)
    return redact(f"{type(exc).__name__}: {message}" if message else type(exc).__name__)


class _Group(click.Group):
    """Turns every error into one line on stderr and an exit status; never a traceback."""

    def main(  # type: ignore[override]
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> int:
        code = self._run(args, prog_name or "kraken-pay", complete_var, extra)
        if standalone_mode:
            sys.exit(code)
        return code

    def _run(self, args: Any, prog_name: str, complete_var: Any, extra: dict[str, Any]) -> int:
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.UsageError as exc:
            where = exc.ctx.command_path if exc.ctx else prog_name
            _error(f"{where}: {exc.format_message().rstrip('.')} (see '{where} --help')")
            return EXIT_USAGE
        except click.ClickException as exc:
            _error(f"{prog_name}: {describe(exc) if isinstance(exc, CommandError) else exc}")
            return exc.exit_code
        except (click.Abort, KeyboardInterrupt):
            _error(f"{prog_name}: interrupted")
            return EXIT_INTERRUPTED
        except Exception as exc:  # one line, whatever it is: the status says what kind
            code = exit_code_for(exc)
            _error(f"{prog_name}: {describe(exc)}{_HINTS.get(code, '')}")
            return code
        return rv if isinstance(rv, int) else EXIT_OK


def _error(line: str) -> None:
    click.echo(line, err=True)


@click.group(cls=_Group, epilog=EXIT_CODES_HELP, context_settings={"max_content_width": 100})
def cli() -> None:
    """Cancel Kraken Pay payment requests through Celery, and check the setup.

    Configuration comes from the environment, as for the workers: KRAKEN_API_KEY,
    KRAKEN_API_SECRET, KRAKEN_API_URL, REDIS_URL, CELERY_BROKER_URL, ... (see
    kraken.env.example).
    """


def main(argv: Sequence[str] | None = None) -> None:
    """The console script ``kraken-pay``."""
    cli.main(argv, prog_name="kraken-pay")


def _app() -> Any:
    """The standalone app (the commands publish through it); ConfigurationError if its
    configuration cannot be loaded."""
    from tasks.standalone import standalone_app

    app = standalone_app()
    _django_ready(str(app.conf.result_backend or ""))
    return app


def _django_ready(backend: str) -> None:
    """A django-db or django-cache result backend reads Django's models: set Django up first,
    as a Django project's worker does (else ``AppRegistryNotReady`` at the first result)."""
    if not backend.startswith(("django-db", "django-cache")):
        return
    import os

    if not os.environ.get("DJANGO_SETTINGS_MODULE", "").strip():
        raise CommandError(
            f"CELERY_RESULT_BACKEND: {backend} needs DJANGO_SETTINGS_MODULE (the Django project "
            "whose database holds the results)",
            EXIT_CONFIG,
        )
    import django

    django.setup()  # idempotent


_noted: set[str] = set()


def _settings(note: bool = True) -> Any:
    """The library's settings, as the standalone fleet's workers resolve them; a note on
    stderr, once, when the Redis used is the default one."""
    from tasks.checks import is_default
    from tasks.settings import settings_for

    settings = settings_for(_app())
    if note and is_default("REDIS_URL") and "REDIS_URL" not in _noted:
        _noted.add("REDIS_URL")
        _error(f"kraken-pay: note: REDIS_URL is not set; using {redact(settings.redis_url)}")
    return settings


# ----------------------------------------------------------------------------- ids


def parse_id(text: str) -> str:
    """The canonical external id for ``text``: canonical base64, or a UUID's 8-4-4-4-12 form.

    Digits alone are base64 too, so an integer id must be given in its base64 form.
    """
    value: Any = text.strip()
    if len(value) == 36 and value.count("-") == 4:
        with contextlib.suppress(ValueError):
            value = uuid.UUID(value)
    return normalize_external_id(value)


def _parse_ids(texts: Sequence[str]) -> list[str]:
    ids = []
    for text in texts:
        try:
            ids.append(parse_id(text))
        except ValueError as exc:
            raise click.BadParameter(f"{text!r}: {exc}", param_hint="ID") from None
    return ids


# ----------------------------------------------------------------------------- cancel

# Publishing gives up after about a second when the broker does not answer, instead of
# Celery's default of retrying for longer, so a shell user hears about it at once.
_PUBLISH_RETRY = {"max_retries": 2, "interval_start": 0.2, "interval_step": 0.4}


@cli.command()
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
    nonces come from Redis when REDIS_URL answers (shared with the workers), else from this
    host's clock.
    """
    eids = _parse_ids(ids)
    if direct:
        return _print_outcomes(asyncio.run(_cancel_direct(eids)))
    from tasks import cancel_request

    _require_celery()
    options = {"retry_policy": _PUBLISH_RETRY} | ({"queue": queue} if queue else {})
    queued = [(eid, cancel_request.apply_async((eid,), **options)) for eid in eids]
    if not wait:
        for eid, result in queued:
            click.echo(f"{eid}  queued  task {result.id}")
        return EXIT_OK
    return _print_outcomes(_wait_for(queued, timeout))


Outcome = dict[str, Any] | BaseException


def release_results() -> None:
    """Close the result subscription while Redis still answers. Results freed later, at
    interpreter exit, then have nothing to unsubscribe from (Celery would print a traceback
    trying to, from ``AsyncResult.__del__``)."""
    from tasks.standalone import standalone_app

    consumer = getattr(standalone_app().backend, "result_consumer", None)
    if consumer is not None:
        consumer.stop()
        consumer.subscribed_to.clear()


def _require_celery() -> None:
    """Fail in one line, at once, when the broker or the result backend does not answer.

    Celery itself would retry for many seconds and end with a long message.
    """
    app = _app()
    _settings()  # a bad setting is refused before anything is sent, in one line
    findings = [_check_broker(app.conf.broker_url)]
    backend = str(app.conf.result_backend or "")
    if backend.startswith(("redis://", "rediss://", "unix://")):
        findings.append(_check_redis(backend, "result backend"))
    for finding in findings:
        if not finding.ok:
            raise CommandError(f"{finding.name}: {finding.detail}", EXIT_UNREACHABLE)


def _wait_for(queued: list[tuple[str, Any]], timeout: float) -> list[tuple[str, Outcome]]:
    from celery.exceptions import TimeoutError as CeleryTimeout

    deadline = time.monotonic() + timeout
    outcomes: list[tuple[str, Outcome]] = []
    for eid, result in queued:
        try:
            value = result.get(timeout=max(0.01, deadline - time.monotonic()), propagate=False)
        except CeleryTimeout:
            value = TimeoutError(f"no outcome within {timeout:g}s (is a worker running?)")
        outcomes.append((eid, value))
    release_results()
    return outcomes


def _print_outcomes(outcomes: list[tuple[str, Outcome]]) -> int:
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


async def _cancel_direct(eids: list[str]) -> list[tuple[str, Outcome]]:
    """One call per id from this process; stops at the first error that would repeat."""
    from kraken.pay import KrakenPayClient

    settings = _settings()
    credentials = settings.credentials()
    nonce, close_nonce = await _direct_nonce(settings.redis_url, credentials.key_id)
    client = KrakenPayClient(
        credentials,
        base_url=settings.api_url,
        nonce=nonce,
        ordering=settings.ordering,
        timeout=settings.timeout,
    )
    try:
        return [(eid, await _cancel_once(client, eid)) for eid in eids]
    finally:
        await client.close()
        await close_nonce()


async def _direct_nonce(redis_url: str, key_id: str) -> tuple[Any, Callable[[], Any]]:
    """RedisNonce when Redis answers (the workers' sequence and lock), else ClockNonce."""
    import redis.asyncio

    from kraken.pay import ClockNonce, RedisNonce
    from tasks.embedded import redis_answers

    if await asyncio.to_thread(redis_answers, redis_url):
        client = redis.asyncio.Redis.from_url(redis_url)
        return RedisNonce(client, key_id), client.aclose
    _error(f"kraken-pay: note: no Redis at {redact(redis_url)}; nonces from this host's clock")

    async def nothing() -> None:
        return None

    return ClockNonce(), nothing


async def _cancel_once(client: Any, eid: str) -> Outcome:
    from kraken.pay.errors import PayRequestError
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


# ----------------------------------------------------------------------------- bulk-cancel


@cli.command("bulk-cancel")
@click.argument("source", type=click.File("rb"), metavar="FILE|-")
@click.option("--column", help="Read CSV and take the ids from this column (name or number).")
@click.option("--wait/--no-wait", default=True, show_default=True, help="Wait for the outcomes.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=600.0,
    show_default=True,
    help="Seconds to wait for the whole bulk cancellation.",
)
@click.option("--queue", help="The Celery queue to send to (default: the app's default queue).")
@click.option(
    "--max-ids",
    type=click.IntRange(min=1),
    default=idfile.MAX_IDS,
    show_default=True,
    help="Refuse a file with more ids than this (nothing is sent).",
)
def bulk_cancel_command(
    source: BinaryIO,
    column: str | None,
    wait: bool,
    timeout: float,
    queue: str | None,
    max_ids: int,
) -> int:
    """Cancel every payment request whose id is in FILE (one a line; - for stdin).

    Bad lines (not an id, not UTF-8, longer than 1 KiB) are reported on stderr with their
    line number and skipped; the first 100 are shown, the rest counted. With --wait (the
    default) a progress bar runs until every chunk is done, then a table of outcomes.
    Exits 1 if any cancellation failed, else 2 if any line was bad.
    """
    ids, problems = _read_bulk_file(source, column, max_ids)
    if not ids:
        raise CommandError(f"no ids to cancel in {source.name}", EXIT_USAGE)
    from tasks import bulk_cancel

    _require_celery()
    result = bulk_cancel.apply_async((ids,), **({"queue": queue} if queue else {}))
    try:
        if not wait:
            click.echo(f"{len(ids)} ids queued  task {result.id}")
            return EXIT_USAGE if problems else EXIT_OK
        summary = _follow_bulk(result, len(ids), timeout)
    finally:
        release_results()
    _print_bulk_summary(summary, problems.count)
    if summary["failed"]:
        auth = any("AuthenticationError" in item["error"] for item in summary["failed"])
        return EXIT_CONFIG if auth else EXIT_FAILED
    return EXIT_USAGE if problems else EXIT_OK


def _read_bulk_file(
    source: BinaryIO, column: str | None, max_ids: int
) -> tuple[list[str], idfile.Problems]:
    """The ids of ``source``; its bad lines go to stderr, even when the file is refused."""
    problems = idfile.Problems()
    try:
        ids = idfile.read_ids(source, column, problems=problems, parse=parse_id, max_ids=max_ids)
    except idfile.InputError as exc:
        raise CommandError(f"{source.name}: {exc}", EXIT_USAGE) from None
    finally:
        for report in problems.reports:
            _error(f"kraken-pay bulk-cancel: skipped {report}")
        if problems.unreported:
            _error(f"kraken-pay bulk-cancel: skipped {problems.unreported:,} more bad line(s)")
    return ids, problems


def _follow_bulk(result: Any, total: int, timeout: float) -> dict[str, Any]:
    """Wait for the summary; a progress bar advances as each chunk finishes."""
    from celery.exceptions import TimeoutError as CeleryTimeout

    deadline = time.monotonic() + timeout
    chunks = list(getattr(result.parent, "results", None) or [])
    counted: set[str] = set()
    with click.progressbar(length=total, label="cancelling", show_pos=True) as bar:
        while not result.ready():
            for chunk in chunks:
                if chunk.id not in counted and chunk.successful():
                    counted.add(chunk.id)
                    bar.update(int(chunk.result.get("total", 0)))
            if time.monotonic() > deadline:
                raise CommandError(f"the bulk cancellation did not finish within {timeout:g}s")
            time.sleep(0.2)
        bar.update(total - bar.pos)
    try:
        return result.get(timeout=max(0.01, deadline - time.monotonic()))
    except CeleryTimeout:
        raise CommandError(f"no summary within {timeout:g}s") from None


def _print_bulk_summary(summary: dict[str, Any], bad_lines: int) -> None:
    outcomes = summary["outcomes"]
    rows = [
        (
            "ids",
            f"{summary['total']} ({bad_lines} bad line(s), {summary['duplicates']} duplicate(s))",
        ),
        *((name.replace("_", " "), str(count)) for name, count in outcomes.items()),
        ("handed to cancel_request", f"{summary['handed_off']} (retried there, durably)"),
        ("failed", str(len(summary["failed"]))),
    ]
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        click.echo(f"  {label:<{width}}  {value}")
    for item in summary["failed"]:
        click.echo(f"{item['external_id']}  failed  {item['error']}")


# ----------------------------------------------------------------------------- schedules

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd]?)")


def parse_duration(text: str) -> float:
    """Seconds in ``30m``, ``1h30m``, ``90s``, ``2d`` or a bare number of seconds."""
    parts = _DURATION.findall(text.strip().lower())
    if not parts or "".join(a + b for a, b in parts) != text.strip().lower():
        raise ValueError(f"{text!r} is not a duration such as 90s, 30m, 1h30m or 2d")
    return sum(float(number) * _UNITS[unit or "s"] for number, unit in parts)


def parse_time(text: str) -> datetime:
    """An ISO 8601 time with a zone (``2026-12-01T10:00:00Z``, ``...+01:00``)."""
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"{text!r} is not an ISO 8601 time such as 2026-12-01T10:00:00Z") from None
    if when.tzinfo is None:
        raise ValueError(f"{text!r} has no time zone: add Z (UTC) or an offset such as +01:00")
    return when


def _when(due: datetime, now: datetime) -> str:
    seconds = (due - now).total_seconds()
    if abs(seconds) < 1:
        return "due now"
    return f"in {_span(seconds)}" if seconds > 0 else f"overdue by {_span(-seconds)}"


def _span(seconds: float) -> str:
    whole = round(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [(days, "d"), (hours, "h"), (minutes, "m"), (secs, "s")]
    return "".join(f"{n}{unit}" for n, unit in parts if n) or "0s"


def _iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def _redis_now() -> datetime:
    """Now by Redis's clock, the one the dispatcher compares due times with."""
    import redis

    client = redis.Redis.from_url(_settings().redis_url, socket_timeout=_CHECK_TIMEOUT)
    try:
        seconds, micros = client.time()
    finally:
        client.close()
    return datetime.fromtimestamp(seconds + micros / 1e6, timezone.utc)


@cli.command()
@click.argument("external_id", metavar="ID")
@click.option("--in", "in_", metavar="DURATION", help="From now: 90s, 30m, 1h30m, 2d.")
@click.option("--at", metavar="ISO8601", help="A time with a zone: 2026-12-01T10:00:00Z.")
def schedule(external_id: str, in_: str | None, at: str | None) -> int:
    """Schedule the cancellation of payment request ID, --in a while or --at a time.

    Scheduling an id again moves it. Beat's dispatcher sends it to the workers when due;
    the schedule lives in the Redis at REDIS_URL.
    """
    if (in_ is None) == (at is None):
        raise click.UsageError("give exactly one of --in and --at")
    eid = _parse_ids([external_id])[0]
    try:
        when = {"in_": parse_duration(in_)} if in_ is not None else {"at": parse_time(at or "")}
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--in" if in_ else "--at") from None
    from tasks import schedule_cancel

    due = schedule_cancel(eid, app=_app(), **when)  # type: ignore[arg-type]
    click.echo(f"{eid}  scheduled  {_iso(due)} ({_when(due, _redis_now())})")
    return EXIT_OK


@cli.command()
@click.argument("external_id", metavar="ID")
def unschedule(external_id: str) -> int:
    """Forget the scheduled cancellation of payment request ID (exit 1 if none waited)."""
    eid = _parse_ids([external_id])[0]
    _settings()  # a bad setting is refused here; the default Redis is noted
    from tasks import unschedule_cancel

    if unschedule_cancel(eid, app=_app()):
        click.echo(f"{eid}  unscheduled")
        return EXIT_OK
    click.echo(f"{eid}  was not scheduled")
    return EXIT_FAILED


@cli.command("scheduled")
@click.option("--limit", type=click.IntRange(min=1), help="Show only the first N.")
@click.option(
    "--overdue",
    type=click.FloatRange(min=0),
    metavar="SECONDS",
    help="Exit 1 if a cancellation is overdue by more than SECONDS (a health check).",
)
def scheduled_command(limit: int | None, overdue: float | None) -> int:
    """List the scheduled cancellations, soonest first, with when each is due."""
    from tasks import scheduled

    entries = scheduled(limit=limit, app=_app())
    now = _redis_now()
    for eid, due in entries:
        click.echo(f"{_iso(due)}  {eid}  {_when(due, now)}")
    click.echo(f"{len(entries)} scheduled" if entries else "nothing scheduled")
    late = [due for _, due in entries if (now - due).total_seconds() > (overdue or 0)]
    if overdue is not None and late:
        click.echo(f"{len(late)} overdue by more than {overdue:g}s: is beat running?")
        return EXIT_FAILED
    return EXIT_OK


# ----------------------------------------------------------------------------- simulator


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True)
@click.option("--seed", type=int, help="Seed for the fault draws, for reproducible runs.")
def simulator(host: str, port: int, seed: int | None) -> int:
    """Run the Kraken Pay simulator until Ctrl-C.

    It accepts the demo key pair (kraken.pay.simulator.DEMO_API_KEY and DEMO_API_SECRET, the
    pair in kraken.env.example); point workers at it with KRAKEN_API_URL. Control it over
    HTTP: POST /_sim/requests, POST /_sim/faults, GET /_sim/stats.
    """
    from kraken.pay.simulator import serve

    try:
        serve(host, port, seed=seed)
    except OSError as exc:
        raise CommandError(f"cannot listen on {host}:{port}: {exc.strerror or exc}", 4) from None
    return EXIT_OK


# ----------------------------------------------------------------------------- check

_CHECK_TIMEOUT = 3.0  # seconds each network check may take


@cli.command()
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
        settings = _settings(note=False)
    except ConfigurationError as exc:
        findings = [Finding("settings", str(exc), EXIT_CONFIG)]
    else:
        findings = _findings(settings, max_skew)
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


def _findings(settings: Any, max_skew: float) -> list[Finding]:
    import redis

    from tasks import checks

    credentials = _check_credentials(settings)
    store = _check_redis(settings.redis_url)
    if checks.is_default("REDIS_URL"):
        store.detail += " (default: REDIS_URL is not set)"
    app = _app()
    broker = _check_broker(app.conf.broker_url)
    broker.detail += checks.broker_note()
    if not credentials.ok:
        api = Finding("api", "not called: no usable credentials", warning=True)
    elif not store.ok:
        api = Finding(
            "api", "not called: its nonce must come from the workers' Redis", EXIT_UNREACHABLE
        )
    else:
        api = checks.check_key(settings)
    findings = [credentials, store, broker, api]
    if store.ok:
        findings.append(_check_clock(settings.redis_url, max_skew))
        client = redis.Redis.from_url(settings.redis_url, socket_timeout=_CHECK_TIMEOUT)
        try:
            findings += checks.check_redis_safety(client)
            findings.append(
                checks.check_beat(client, settings.schedule_interval, settings.redis_prefix)
            )
        finally:
            client.close()
    if broker.ok:
        findings.append(checks.check_workers(app, settings.queue))
    return findings


def _check_credentials(settings: Any) -> Finding:
    try:
        credentials = settings.credentials()
    except ConfigurationError as exc:
        return Finding("credentials", str(exc), EXIT_CONFIG)
    from tasks.checks import secret_warning

    size = credentials.secret_size
    short = secret_warning(size)
    return Finding(
        "credentials",
        f"KRAKEN_API_KEY is set (key id {credentials.key_id}); "
        + (short or f"KRAKEN_API_SECRET decodes to {size} bytes"),
        warning=short is not None,
    )


def _check_redis(url: str, name: str = "redis") -> Finding:
    import redis

    client = redis.Redis.from_url(
        url, socket_connect_timeout=_CHECK_TIMEOUT, socket_timeout=_CHECK_TIMEOUT
    )
    started = time.perf_counter()
    try:
        client.ping()
    except redis.RedisError as exc:
        return Finding(name, f"{redact(url)} does not answer: {describe(exc)}", EXIT_UNREACHABLE)
    finally:
        client.close()
    return Finding(name, f"{redact(url)} answers ({_ms(started)})")


def _check_broker(url: str) -> Finding:
    from kombu import Connection

    started = time.perf_counter()
    try:
        with Connection(url, connect_timeout=_CHECK_TIMEOUT) as connection:
            connection.ensure_connection(max_retries=1, interval_start=0, timeout=_CHECK_TIMEOUT)
            connection.default_channel  # noqa: B018 - a channel proves the broker speaks
    except Exception as exc:  # kombu raises its own and its transports' errors
        return Finding("broker", f"{redact(url)} does not answer: {describe(exc)}", 4)
    return Finding("broker", f"{redact(url)} answers ({_ms(started)})")


def _check_clock(url: str, max_skew: float) -> Finding:
    """Countdowns and scheduled times are set on one host and honoured on another."""
    import redis

    client = redis.Redis.from_url(url, socket_timeout=_CHECK_TIMEOUT)
    try:
        before = time.time()
        seconds, micros = client.time()
        after = time.time()
    except redis.RedisError as exc:
        return Finding("clock", f"cannot read Redis's clock: {describe(exc)}", 4)
    finally:
        client.close()
    skew = seconds + micros / 1e6 - (before + after) / 2
    side = "behind" if skew > 0 else "ahead of"
    detail = f"this host is {abs(skew):.3f}s {side} Redis (at most {max_skew:g}s allowed)"
    return Finding("clock", detail, None if abs(skew) <= max_skew else EXIT_FAILED)


def _ms(started: float) -> str:
    return f"{(time.perf_counter() - started) * 1000:.0f} ms"


# ----------------------------------------------------------------------------- demo


@cli.command()
@click.option(
    "--requests",
    type=click.IntRange(1, 100_000),
    default=300,
    show_default=True,
    help="Payment requests to create and cancel.",
)
@click.option("--workers", type=click.IntRange(1, 8), default=2, show_default=True)
@click.option(
    "--fault-rate",
    type=click.FloatRange(0, 0.9),
    default=0.1,
    show_default=True,
    help="Share of Kraken calls that fail (resets, 5xx, garbled bodies, rate limits, ...).",
)
@click.option("--seed", type=int, help="Seed for the simulator's fault draws.")
def demo(requests: int, workers: int, fault_rate: float, seed: int | None) -> int:
    """Run everything on this machine and cancel a few hundred payment requests.

    Starts the Kraken Pay simulator, a Redis (yours at REDIS_URL, in an empty database
    that it empties again; else a redis-server or an embedded fakeredis) and Celery
    workers; cancels through cancel_request.delay() and bulk_cancel while the simulator
    injects faults, and ends with a table. Everything it started is stopped on exit, also
    on Ctrl-C. Exits 1 if any cancellation failed.
    """
    from tasks.demo import DemoError, DemoOptions, run_demo

    options = DemoOptions(
        requests=requests,
        paid=min(10, requests // 10),
        workers=workers,
        fault_rate=fault_rate,
        seed=seed,
    )
    try:
        return run_demo(options)
    except DemoError as exc:
        raise CommandError(str(exc), EXIT_UNREACHABLE) from None
