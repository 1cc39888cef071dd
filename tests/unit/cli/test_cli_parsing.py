"""What the ``kraken-pay`` command reads, in this process: ids (canonical base64 or a UUID,
refused before anything is queued), durations, times with a zone; and passwords in URLs
never shown. The command itself, in fresh processes: integration/cli/test_cli.py."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from click.testing import CliRunner

from kraken_pay_cli import cli
from tasks.celery import app


def test_a_malformed_id_is_refused_before_anything_is_queued(monkeypatch):
    sent = []
    monkeypatch.setattr(app, "send_task", lambda *a, **kw: sent.append(a))
    result = CliRunner().invoke(cli.cli, ["cancel", "AAAAAAAAAAE", "not base64!"])
    assert result.exit_code == 2
    assert "'not base64!': external_id: must be base64" in result.stderr
    assert sent == []


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("AAAAAAAAAAE", "AAAAAAAAAAE"),
        ("00000000-0000-0000-0000-000000000001", "AAAAAAAAAAAAAAAAAAAAAQ"),
        (" AAAAAAAAAAE ", "AAAAAAAAAAE"),
    ],
)
def test_an_id_is_canonical_base64_or_a_uuid(text, canonical):
    assert cli.parse_id(text) == canonical


def test_digits_are_base64_not_an_integer():
    assert cli.parse_id("1234") == "1234"


def test_passwords_in_urls_are_never_shown():
    assert cli.redact("cannot reach redis://:hunter2@h:6379/0 or amqp://u:p@r//") == (
        "cannot reach redis://:***@h:6379/0 or amqp://u:***@r//"
    )


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("30m", 1800), ("1h30m", 5400), ("2d", 172800), ("45", 45), ("1.5h", 5400)],
)
def test_durations(text, seconds):
    assert cli.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "30x", "m30", "-5m"])
def test_bad_durations_say_what_a_duration_looks_like(text):
    with pytest.raises(ValueError, match="is not a duration such as 90s, 30m, 1h30m or 2d"):
        cli.parse_duration(text)


def test_times_are_iso_8601_with_a_zone():
    assert cli.parse_time("2026-12-01T10:00:00Z") == datetime(2026, 12, 1, 10, tzinfo=timezone.utc)
    assert cli.parse_time("2026-12-01T11:00:00+01:00") == datetime(
        2026, 12, 1, 10, tzinfo=timezone.utc
    )


def test_a_time_without_a_zone_is_refused():
    with pytest.raises(ValueError, match="has no time zone"):
        cli.parse_time("2026-12-01T10:00:00")
    with pytest.raises(ValueError, match="is not an ISO 8601 time"):
        cli.parse_time("tomorrow")
