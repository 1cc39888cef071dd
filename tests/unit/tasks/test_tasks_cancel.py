"""tasks/cancel.py in eager mode, against a scripted client: outcomes, failures, retries, logs."""

from __future__ import annotations

import logging
import uuid

import pytest
from fake_client import kraken_error, pay_error
from tasks_support import client_app

from kraken.pay import InvalidExternalId
from kraken.pay.errors import RateLimited, TransportError
from tasks import RetriesExhausted, cancel_request, runtime
from tasks.celery import app
from tasks.settings import settings_for

EID = "AAAAAAAAAAE"  # the 8 bytes of the integer 1


@pytest.fixture
def policy(kraken_settings):
    """Set the retry numbers the task sees."""
    return kraken_settings


def run(eid: object = EID, **kwargs: object):
    return cancel_request.apply(args=(eid,), kwargs=kwargs)


def test_a_successful_call_is_the_outcome_cancelled(scripted):
    client = scripted({})
    result = run().get()
    assert result == {
        "external_id": EID,
        "outcome": "cancelled",
        "attempts": 1,
        "confirmed_on_retry": False,
        "result": {},
        "error": None,
    }
    assert client.calls == [EID]


@pytest.mark.parametrize(
    ("error_type", "outcome"),
    [
        ("RequestNotFound", "not_found"),
        ("RequestAlreadyCancelled", "already_cancelled"),
        ("RequestNotCancellable", "not_cancellable"),
    ],
)
def test_what_kraken_says_about_the_request_is_an_outcome_not_a_failure(
    scripted, error_type, outcome
):
    client = scripted(pay_error(error_type))
    result = run()
    assert result.successful()
    assert result.get()["outcome"] == outcome
    assert result.get()["error"]["errors"][0]["type"] == error_type
    assert len(client.calls) == 1


def test_already_cancelled_after_an_ambiguous_attempt_means_our_attempt_worked(scripted):
    scripted(
        TransportError("no answer within 10s", ambiguous=True), pay_error("RequestAlreadyCancelled")
    )
    result = run().get()
    assert result["outcome"] == "cancelled"
    assert result["confirmed_on_retry"] is True
    assert result["attempts"] == 2


def test_already_cancelled_after_a_call_that_never_left_stays_already_cancelled(scripted):
    scripted(TransportError("cannot connect"), pay_error("RequestAlreadyCancelled"))
    result = run().get()
    assert (result["outcome"], result["confirmed_on_retry"]) == ("already_cancelled", False)


def test_the_ambiguity_of_an_early_attempt_survives_later_clean_failures(scripted):
    scripted(
        TransportError("reset after sending", ambiguous=True),
        TransportError("cannot connect"),
        pay_error("RequestAlreadyCancelled"),
    )
    result = run().get()
    assert (result["outcome"], result["confirmed_on_retry"], result["attempts"]) == (
        "cancelled",
        True,
        3,
    )


@pytest.mark.parametrize(
    "error",
    [
        kraken_error("EAPI:Rate limit exceeded"),
        kraken_error("EService:Unavailable"),
        kraken_error("EAPI:Invalid nonce"),
        kraken_error("EGeneral:Temporary lockout"),
        TransportError("HTTP 502", ambiguous=True),
    ],
)
def test_transient_errors_are_retried_until_the_call_succeeds(scripted, error):
    client = scripted(error, error, {})
    result = run().get()
    assert (result["outcome"], result["attempts"]) == ("cancelled", 3)
    assert len(client.calls) == 3


@pytest.mark.parametrize(
    "error",
    [
        kraken_error("EAPI:Invalid key"),
        kraken_error("EAPI:Invalid signature"),
        kraken_error("EGeneral:Invalid arguments"),
        kraken_error("EGeneral:Unknown method"),
        pay_error("SomethingNew"),
    ],
)
def test_terminal_errors_fail_at_once(scripted, error):
    client = scripted(error)
    result = run()
    assert result.failed()
    assert type(result.result) is type(error)
    assert len(client.calls) == 1


def test_a_terminal_error_is_logged_once_with_the_external_id_and_the_kraken_error(
    scripted, caplog
):
    scripted(kraken_error("EAPI:Invalid key"))
    with caplog.at_level(logging.INFO, logger="tasks.cancel"):
        run()
    errors = [r for r in caplog.records if r.name == "tasks.cancel" and r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert EID in errors[0].getMessage()
    assert "EAPI:Invalid key" in errors[0].getMessage()
    assert errors[0].external_id == EID


def test_retries_exhausted_fails_with_our_own_error(scripted, policy):
    policy(retry_max_attempts=3, retry_base_delay=0.001)
    client = scripted(*[RateLimited("EAPI:Rate limit exceeded")] * 3)
    result = run()
    assert result.failed()
    assert isinstance(result.result, RetriesExhausted)
    assert result.result.attempts == 3
    assert result.result.last_error["error"] == "RateLimited"
    assert len(client.calls) == 3


def test_the_deadline_ends_retries_even_with_attempts_left(scripted, policy):
    policy(retry_max_attempts=100, retry_max_delay=10.0, retry_deadline=5.0)
    client = scripted(*[kraken_error("EGeneral:Temporary lockout")] * 100)  # floor 30s > 5s
    result = run()
    assert isinstance(result.result, RetriesExhausted)
    assert len(client.calls) == 1


def test_a_call_that_outlives_the_runtime_timeout_counts_as_ambiguous(
    scripted, policy, monkeypatch
):
    scripted({})
    calls = []

    def fake_run(coro, timeout):
        coro.close()
        calls.append(timeout)
        if len(calls) == 1:
            raise TimeoutError("no result")
        raise pay_error("RequestAlreadyCancelled")

    monkeypatch.setattr(runtime, "run", fake_run)
    result = run().get()
    assert (result["outcome"], result["confirmed_on_retry"]) == ("cancelled", True)
    assert calls[0] == settings_for(app).attempt_timeout


def test_one_log_line_per_attempt_and_one_per_outcome(scripted, caplog):
    scripted(TransportError("HTTP 502", ambiguous=True), {})
    with caplog.at_level(logging.INFO, logger="tasks.cancel"):
        run()
    lines = [r for r in caplog.records if r.name == "tasks.cancel"]
    events = [r.event for r in lines]
    assert events == [
        "cancel_request.attempt",
        "cancel_request.attempt",
        "cancel_request.outcome",
    ]
    first = lines[0]
    assert (first.external_id, first.attempt, first.error_class) == (EID, 1, "TransportError")
    assert first.delay is not None and first.delay >= 0
    assert "external_id=AAAAAAAAAAE attempt=1 error=TransportError" in first.getMessage()


def test_a_bad_id_reaching_the_worker_fails_at_once_without_a_call(scripted):
    client = scripted({})
    result = run("not base64!")
    assert isinstance(result.result, InvalidExternalId)
    assert client.calls == []


@pytest.mark.parametrize("bad", ["", "a=", "not base64!", "A" * 23, -1, 2**64, True, 1.5, None])
def test_delay_refuses_a_bad_id_and_sends_nothing(monkeypatch, bad):
    sent = []
    monkeypatch.setattr(app, "send_task", lambda *a, **kw: sent.append((a, kw)))
    with pytest.raises(InvalidExternalId) as caught:
        cancel_request.delay(bad)
    assert str(caught.value).startswith("external_id:")
    assert sent == []


def test_apply_async_refuses_a_bad_keyword_id_and_a_missing_one(monkeypatch):
    sent = []
    monkeypatch.setattr(app, "send_task", lambda *a, **kw: sent.append((a, kw)))
    with pytest.raises(InvalidExternalId):
        cancel_request.apply_async(kwargs={"external_id": "***"})
    with pytest.raises(InvalidExternalId):
        cancel_request.apply_async()
    assert sent == []


@pytest.mark.parametrize(
    ("value", "canonical"),
    [
        (uuid.UUID("00000000-0000-0000-0000-000000000001"), "AAAAAAAAAAAAAAAAAAAAAQ"),
        (1, EID),
        (b"\x00" * 7 + b"\x01", EID),
        (EID, EID),
    ],
)
def test_the_message_carries_the_canonical_id(monkeypatch, value, canonical):
    sent = []
    monkeypatch.setattr(app, "send_task", lambda name, args, kwargs, **kw: sent.append(args))
    cancel_request.delay(value)
    assert sent == [(canonical,)]


# ------------------------------------------------------------------ eager mode and link

outcomes_seen: list[dict] = []


@app.task(name="tests.record_outcome")
def record_outcome(result: dict) -> None:
    """What a user's `link` task does with the result (here: remember it)."""
    outcomes_seen.append(result)


@pytest.fixture
def eager():
    """task_always_eager, with a broker nobody listens on: nothing may try to reach it."""
    outcomes_seen.clear()
    with client_app(
        app,
        task_always_eager=True,
        broker_url="redis://127.0.0.1:1/0",
        broker_connection_timeout=0.5,
        broker_connection_max_retries=0,
    ):
        yield


def test_delay_runs_in_process_in_eager_mode(scripted, eager):
    client = scripted(TransportError("reset", ambiguous=True), {})
    result = cancel_request.delay(1)
    assert result.get()["outcome"] == "cancelled"
    assert client.calls == [EID, EID]


def test_a_link_receives_the_outcome(scripted, eager):
    scripted(pay_error("RequestNotCancellable"))
    cancel_request.apply_async((EID,), link=record_outcome.s())
    assert [r["outcome"] for r in outcomes_seen] == ["not_cancellable"]
