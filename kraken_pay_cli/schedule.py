"""``kraken-pay schedule``, ``unschedule`` and ``scheduled``: cancellations due later.

Due times are shown against Redis's clock, the one beat's dispatcher compares them with.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone

import click

from kraken_pay_cli.app import EXIT_FAILED, EXIT_OK, parse_ids, settings, standalone
from kraken_pay_cli.probes import CHECK_TIMEOUT

__all__ = ["parse_duration", "parse_time", "schedule", "scheduled", "unschedule"]

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

    client = redis.Redis.from_url(settings().redis_url, socket_timeout=CHECK_TIMEOUT)
    try:
        seconds, micros = client.time()
    finally:
        client.close()
    return datetime.fromtimestamp(seconds + micros / 1e6, timezone.utc)


@click.command()
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
    eid = parse_ids([external_id])[0]
    try:
        when = {"in_": parse_duration(in_)} if in_ is not None else {"at": parse_time(at or "")}
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--in" if in_ else "--at") from None
    from tasks import schedule_cancel

    due = schedule_cancel(eid, app=standalone(), **when)  # type: ignore[arg-type]
    click.echo(f"{eid}  scheduled  {_iso(due)} ({_when(due, _redis_now())})")
    return EXIT_OK


@click.command()
@click.argument("external_id", metavar="ID")
def unschedule(external_id: str) -> int:
    """Forget the scheduled cancellation of payment request ID (exit 1 if none waited)."""
    eid = parse_ids([external_id])[0]
    settings()  # a bad setting is refused here; the default Redis is noted
    from tasks import unschedule_cancel

    if unschedule_cancel(eid, app=standalone()):
        click.echo(f"{eid}  unscheduled")
        return EXIT_OK
    click.echo(f"{eid}  was not scheduled")
    return EXIT_FAILED


@click.command("scheduled")
@click.option("--limit", type=click.IntRange(min=1), help="Show only the first N.")
@click.option(
    "--overdue",
    type=click.FloatRange(min=0),
    metavar="SECONDS",
    help="Exit 1 if a cancellation is overdue by more than SECONDS (a health check).",
)
def scheduled(limit: int | None, overdue: float | None) -> int:
    """List the scheduled cancellations, soonest first, with when each is due."""
    from tasks import scheduled as list_scheduled

    entries = list_scheduled(limit=limit, app=standalone())
    now = _redis_now()
    for eid, due in entries:
        click.echo(f"{_iso(due)}  {eid}  {_when(due, now)}")
    click.echo(f"{len(entries)} scheduled" if entries else "nothing scheduled")
    late = [due for _, due in entries if (now - due).total_seconds() > (overdue or 0)]
    if overdue is not None and late:
        click.echo(f"{len(late)} overdue by more than {overdue:g}s: is beat running?")
        return EXIT_FAILED
    return EXIT_OK
