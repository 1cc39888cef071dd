"""``kraken-pay bulk-cancel``: every id of a file (or stdin) through one ``bulk_cancel``."""

from __future__ import annotations

import time
from typing import Any, BinaryIO

import click

from kraken_pay_cli import idfile
from kraken_pay_cli.app import (
    EXIT_CONFIG,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    CommandError,
    error,
    parse_id,
    release_results,
)
from kraken_pay_cli.cancel import require_celery

__all__ = ["bulk_cancel"]


@click.command("bulk-cancel")
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
def bulk_cancel(
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
    from tasks import bulk_cancel as task

    require_celery()
    result = task.apply_async((ids,), **({"queue": queue} if queue else {}))
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
            error(f"kraken-pay bulk-cancel: skipped {report}")
        if problems.unreported:
            error(f"kraken-pay bulk-cancel: skipped {problems.unreported:,} more bad line(s)")
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
