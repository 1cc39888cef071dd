"""Metrics: the ledger's gauges, the client's counts of nonce rejections, the port setting.

A real prefork worker's metrics: integration/tasks/test_worker_metrics.py.
"""

from __future__ import annotations

import uuid

import fakeredis
import pytest

from kraken.pay import normalize_external_id
from kraken.pay.simulator import DEMO_API_KEY, DEMO_API_SECRET
from tasks import metrics


def test_the_ledger_gauges_come_from_the_registered_source_at_each_scrape():
    collector = metrics._LedgerCollector()
    assert list(collector.collect()) == []  # no ledger yet: no gauges
    entries = iter([(3, 42.5), (0, 0.0)])
    metrics.set_ledger_source(lambda: next(entries))
    try:
        first = {f.name: f.samples[0].value for f in collector.collect()}
        second = {f.name: f.samples[0].value for f in collector.collect()}
    finally:
        metrics.set_ledger_source(None)
    assert first == {
        "kraken_pay_ledger_open_entries": 3,
        "kraken_pay_ledger_oldest_open_seconds": 42.5,
    }
    assert second["kraken_pay_ledger_open_entries"] == 0


def test_a_failing_ledger_source_drops_only_its_gauges():
    def broken() -> tuple[int, float]:
        raise ConnectionError("ledger store down")

    metrics.set_ledger_source(broken)
    try:
        assert list(metrics._LedgerCollector().collect()) == []
    finally:
        metrics.set_ledger_source(None)


def test_metrics_port_must_be_a_port_number():
    from kraken.pay.errors import ConfigurationError
    from tasks.settings import Settings

    assert Settings.from_env({"KRAKEN_PAY_METRICS_PORT": "9808"}).pay_metrics_port == 9808
    for bad in ("0", "65536", "http", "-1"):
        with pytest.raises(ConfigurationError, match="KRAKEN_PAY_METRICS_PORT: must be a whole"):
            Settings.from_env({"KRAKEN_PAY_METRICS_PORT": bad})


def sample(name: str, **labels: str) -> float:
    return metrics.registry().get_sample_value(name, labels) or 0.0


@pytest.mark.parametrize(
    ("fault", "error_class", "when"),
    [
        ({"delay": {"next": 1, "seconds": 1.0}}, "TransportError", "late"),  # timeout 0.3 s
        ({"invalid_nonce": {"next": 1}}, "InvalidNonce", "on_time"),
    ],
)
async def test_nonce_rejections_seen_and_possible_late_ones_are_counted_apart(
    fault, error_class, when
):
    from kraken.pay import Credentials, KrakenError
    from kraken.pay.simulator import Simulator

    async with Simulator() as simulator:
        eid = normalize_external_id(uuid.uuid4())
        simulator.create_requests([eid])
        simulator.set_faults(fault)
        credentials = Credentials(DEMO_API_KEY, DEMO_API_SECRET)
        calls = sample("kraken_pay_kraken_calls_total", error_class=error_class)
        rejections = sample("kraken_pay_nonce_rejections_total", when=when)
        quick = {"timeout": 0.3, "late_landing_grace": 0}  # the grace has tests of its own
        async with metrics.ObservedClient(credentials, base_url=simulator.url, **quick) as c:
            with pytest.raises(KrakenError):
                await c.cancel_request(eid)
    assert sample("kraken_pay_kraken_calls_total", error_class=error_class) == calls + 1
    assert sample("kraken_pay_nonce_rejections_total", when=when) == rejections + 1


def test_the_ledger_source_reads_open_entries_and_the_oldest_age():
    from tasks.ledger import Ledger

    store = fakeredis.FakeRedis()
    ledger = Ledger(store, "kraken-metrics-test")
    source = metrics.ledger_source(ledger)
    assert source() == (0, 0.0)

    ledger.ask(["AAAAAAAAAAE", "AAAAAAAAAAI"], within=60)  # news expected in a minute
    ledger.ask(["AAAAAAAAAAM"], within=3600, scheduled=True)  # waits by design
    entries, oldest = source()
    assert entries == 3
    assert 0 <= oldest < 5  # just asked; the scheduled one does not count

    now_s, now_us = store.time()
    ledger.ask(["AAAAAAAAAAQ"], at=now_s + now_us / 1e6 - 120, scheduled=True)  # beat missed it
    assert source()[1] >= 119
