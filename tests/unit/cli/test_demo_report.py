"""``kraken-pay demo``'s rules, in this process: the faults it injects and the error class it
counts each as, its report and what in it is a problem, the workers' settings, the split
between cancel_request and bulk_cancel. Runs of the demo itself: integration/cli/test_demo.py."""

from __future__ import annotations

from collections import Counter

import pytest

from kraken.pay import Credentials, KrakenError, KrakenPayClient
from kraken.pay.simulator import DEMO_API_KEY, DEMO_API_SECRET, Simulator
from kraken_pay_cli.demo.faults import FAULT_ERRORS, FAULT_KINDS, fault_spec
from kraken_pay_cli.demo.report import Report, Tally
from kraken_pay_cli.demo.run import split_ids, worker_env


@pytest.mark.parametrize(("kind", "error_class"), FAULT_ERRORS.items())
async def test_each_fault_is_the_error_class_the_demo_counts_it_as(kind, error_class):
    async with Simulator() as sim:
        credentials = Credentials(DEMO_API_KEY, DEMO_API_SECRET)
        async with KrakenPayClient(credentials, base_url=sim.url, timeout=2) as client:
            sim.create_requests(["AAAAAAAAAAE"])
            sim.set_faults({kind: {"next": 1}})
            with pytest.raises(KrakenError) as caught:
                await client.cancel_request("AAAAAAAAAAE")
    assert type(caught.value).__name__ == error_class


def test_the_faults_add_up_to_the_rate_asked_for():
    spec = fault_spec(0.1)
    assert set(spec) == set(FAULT_KINDS)
    none_fires = 1.0
    for fault in spec.values():
        none_fires *= 1 - fault["rate"]
    assert 1 - none_fires == pytest.approx(0.1, abs=1e-4)


def test_no_faults_at_a_rate_of_zero():
    assert fault_spec(0) == {}


def report(**tally: object) -> Report:
    stats = {"faults_injected": {}, "requests": 10, "nonce_rejections": 0}
    summary = {"by_state": {"cancelled": 10}}
    return Report(Tally(sent=10, seconds=1.0, **tally), stats, summary)  # type: ignore[arg-type]


def test_a_failed_cancellation_is_a_problem_and_so_exits_non_zero():
    assert report(outcomes=Counter(cancelled=10)).problems() == []
    failed = report(outcomes=Counter(cancelled=9), failures=Counter(RetriesExhausted=1))
    assert failed.problems() == ["1 cancellation(s) failed"]
    assert ("  RetriesExhausted", "1") in failed.rows()
    assert ("  (the last call of a failed task was not)", "") in failed.rows()


def test_unfinished_cancellations_and_nonce_rejections_are_problems():
    late = report(outcomes=Counter(cancelled=8), unfinished=2)
    assert late.problems() == ["2 cancellation(s) did not finish in time"]
    rejected = report(outcomes=Counter(cancelled=10))
    rejected.stats["nonce_rejections"] = 1
    assert rejected.problems() == ["1 nonce(s) rejected by Kraken"]


def test_the_workers_get_the_demo_settings_and_none_of_the_users(monkeypatch):
    monkeypatch.setenv("KRAKEN_API_KEY", "the user's own key")
    monkeypatch.setenv("CELERY_BROKER_URL", "redis://users-broker/0")
    monkeypatch.setenv("DJANGO_SETTINGS_MODULE", "their_site.settings")
    env = worker_env("http://127.0.0.1:9999", "redis://127.0.0.1:6379/9")
    assert env["KRAKEN_API_KEY"] == DEMO_API_KEY
    assert env["KRAKEN_API_URL"] == "http://127.0.0.1:9999"
    assert env["REDIS_URL"] == "redis://127.0.0.1:6379/9"
    assert "CELERY_BROKER_URL" not in env
    assert "DJANGO_SETTINGS_MODULE" not in env


def test_a_third_of_the_ids_go_to_bulk_cancel_and_each_id_one_way():
    ids = [f"id{n}" for n in range(30)]
    by_task, by_bulk = split_ids(ids, 1 / 3)
    assert len(by_bulk) == 10
    assert sorted(by_task + by_bulk) == sorted(ids)
    assert any(eid in by_bulk for eid in ids[:5])  # the already paid, first, go both ways


def test_the_bulk_summary_adds_its_outcomes_failures_and_hand_offs():
    tally = Tally()
    tally.add_bulk(
        {
            "outcomes": {"cancelled": 7, "already_cancelled": 0, "not_cancellable": 1},
            "failed": [{"external_id": "AAAAAAAAAAE", "error": "InvalidRequest: EAPI:Bad request"}],
            "handed_off": 2,
        }
    )
    assert tally.outcomes == {"cancelled": 7, "not_cancellable": 1}
    assert tally.failures == {"InvalidRequest": 1}
    assert tally.handed_off == 2


def test_the_demo_reports_the_cancellations_kraken_confirmed_and_a_shortfall_is_a_problem():
    stats = {"faults_injected": {}, "requests": 10, "nonce_rejections": 0}
    summary = {"by_state": {"cancelled": 10}}
    full = Report(Tally(sent=10, seconds=1.0), stats, summary, confirmed=10)
    assert ("confirmed by Kraken", "10 of 10 by webhook") in full.rows()
    assert full.problems() == []
    short = Report(Tally(sent=10, seconds=1.0), stats, summary, confirmed=7)
    assert short.problems() == ["3 cancellation(s) not confirmed by Kraken"]
