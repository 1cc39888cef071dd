"""What ``kraken-pay check`` concludes, without any service: the refusals that name what to
fix, the Redis settings that would lose the ledger, the note on the default Redis. The command
against real services: integration/cli/test_check.py."""

from __future__ import annotations

import pytest

from kraken.pay.errors import KrakenError, parse_response
from kraken_pay_cli import app as cli_app
from kraken_pay_cli import check as checks
from tasks import standalone


@pytest.mark.parametrize(
    ("error", "says"),
    [
        ("EGeneral:Permission denied", "permission: the key lacks 'Funds permissions - Query'"),
        ("EAPI:Feature disabled", "permission: Kraken Pay is disabled"),
        ("EAPI:Invalid key", "refused key"),
        ("EAPI:Invalid signature", "refused signature"),
    ],
)
def test_each_authentication_error_names_what_to_fix(error, says):
    with pytest.raises(KrakenError) as caught:
        parse_response(200, f'{{"error": ["{error}"]}}'.encode(), {})
    finding = checks._refusal("https://api.kraken.com", caught.value)
    assert finding.failure == 3
    assert says in finding.detail


class FakeInfo:
    def __init__(self, aof: int, policy: str) -> None:
        self.sections = {
            "persistence": {"aof_enabled": aof},
            "memory": {"maxmemory_policy": policy},
        }

    def info(self, section: str) -> dict:
        return self.sections[section]


def test_allkeys_eviction_is_a_warning_and_aof_with_noeviction_is_fine():
    evicting = checks.check_redis_safety(FakeInfo(1, "allkeys-lru"))
    assert [(f.name, f.warning) for f in evicting] == [("persistence", False), ("eviction", True)]
    assert "allkeys-lru may evict" in evicting[1].detail
    safe = checks.check_redis_safety(FakeInfo(1, "noeviction"))
    assert not any(f.warning for f in safe)


def test_every_command_notes_the_default_redis(monkeypatch, capsys):
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.setattr(cli_app, "_noted", set())
    standalone.reset()
    try:
        cli_app.settings()
        cli_app.settings()
    finally:
        monkeypatch.undo()
        standalone.reset()
    err = capsys.readouterr().err.splitlines()
    assert err == ["kraken-pay: note: REDIS_URL is not set; using redis://127.0.0.1:6379/0"]
