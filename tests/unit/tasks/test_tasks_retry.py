"""tasks/retry.py: what is retried, after how long, and when the task gives up."""

from __future__ import annotations

import json
import random

import pytest
from celery.backends.base import BaseBackend

from kraken.pay.errors import (
    AuthenticationError,
    ConfigurationError,
    InvalidNonce,
    InvalidRequest,
    MalformedResponse,
    PayRequestError,
    RateLimited,
    ServiceUnavailable,
    TemporaryLockout,
    TransportError,
)
from tasks.celery import app
from tasks.retry import RetriesExhausted, RetryPolicy, check_visibility
from tasks.settings import Settings

POLICY = RetryPolicy(max_attempts=10, base_delay=1.0, max_delay=300.0, deadline=3600.0)


@pytest.mark.parametrize(
    "exc",
    [
        TransportError("reset"),
        MalformedResponse("half a body", ambiguous=True),
        RateLimited("slow down"),
        ServiceUnavailable("EService:Unavailable"),
        InvalidNonce("EAPI:Invalid nonce"),
        TemporaryLockout("EGeneral:Temporary lockout"),
    ],
)
def test_transient_errors_retry(exc):
    assert POLICY.decide(exc, attempt=1, elapsed=0.0) is not None


@pytest.mark.parametrize(
    "exc",
    [
        AuthenticationError("EAPI:Invalid key"),
        InvalidRequest("EGeneral:Invalid arguments"),
        PayRequestError("EPay:x", reason="not_found"),
        ConfigurationError("KRAKEN_API_SECRET: does not decode"),
        ValueError("a bug"),
    ],
)
def test_terminal_errors_and_other_exceptions_do_not_retry(exc):
    assert POLICY.decide(exc, attempt=1, elapsed=0.0) is None


def test_backoff_is_full_jitter_doubling_up_to_the_cap():
    rand = random.Random(1)
    for retry in range(12):
        window = min(300.0, 1.0 * 2**retry)
        delays = [POLICY.delay(TransportError("x"), retry, rand) for _ in range(200)]
        assert all(0.0 <= d <= window for d in delays)
        assert max(delays) > window * 0.8  # the whole window is used, not a fixed delay
        assert min(delays) < window * 0.2


def test_rate_limits_wait_longer_than_transport_errors():
    rand = random.Random(2)
    transport = [POLICY.delay(TransportError("x"), 0, rand) for _ in range(300)]
    limited = [POLICY.delay(RateLimited("x"), 0, rand) for _ in range(300)]
    assert max(transport) <= 1.0
    assert min(limited) >= 1.0  # its floor
    assert sum(limited) / len(limited) > 2 * sum(transport) / len(transport)


def test_a_temporary_lockout_pauses_long():
    delays = [POLICY.delay(TemporaryLockout("x"), 0, random.Random(i)) for i in range(50)]
    assert min(delays) >= 30.0


def test_retry_after_is_a_floor():
    exc = RateLimited("HTTP 429", retry_after=42.0)
    assert all(POLICY.delay(exc, 0, random.Random(i)) >= 42.0 for i in range(50))


def test_no_countdown_exceeds_the_cap_not_even_for_retry_after():
    policy = RetryPolicy(max_delay=10.0)
    assert policy.delay(RateLimited("x", retry_after=900.0), 0) == 10.0
    assert all(policy.delay(TemporaryLockout("x"), n) <= 10.0 for n in range(20))


def test_gives_up_after_max_attempts():
    policy = RetryPolicy(max_attempts=3)
    assert policy.decide(TransportError("x"), attempt=2, elapsed=0.0) is not None
    assert policy.decide(TransportError("x"), attempt=3, elapsed=0.0) is None


def test_gives_up_when_the_next_attempt_would_start_after_the_deadline():
    policy = RetryPolicy(base_delay=1.0, max_delay=5.0, deadline=60.0)
    exc = RateLimited("x", retry_after=5.0)  # countdown exactly 5
    assert policy.decide(exc, attempt=1, elapsed=54.0) == 5.0
    assert policy.decide(exc, attempt=1, elapsed=56.0) is None


def test_the_default_settings_fit_in_the_default_visibility_timeout():
    settings = Settings()
    _, hard = settings.task_time_limits()
    check_visibility(RetryPolicy.from_settings(settings), 900.0, hard)  # celeryconfig's


def test_a_retry_cap_that_does_not_fit_in_the_visibility_timeout_is_refused():
    with pytest.raises(ConfigurationError) as caught:
        check_visibility(RetryPolicy(max_delay=300.0), visibility_timeout=300.0, time_limit=60)
    message = str(caught.value)
    assert message.startswith("CELERY_VISIBILITY_TIMEOUT:")
    assert "KRAKEN_RETRY_MAX_DELAY" in message


def test_the_policy_refuses_nonsense_numbers():
    with pytest.raises(ConfigurationError, match="KRAKEN_RETRY_MAX_ATTEMPTS"):
        RetryPolicy(max_attempts=0)


def test_retries_exhausted_survives_the_json_result_backend():
    last = RateLimited("EAPI:Rate limit exceeded").to_dict()
    exc = RetriesExhausted("AAAAAAAAAAE", 10, last)
    backend = BaseBackend(app, serializer="json")

    stored = json.loads(json.dumps(backend.prepare_exception(exc)))
    rebuilt = backend.exception_to_python(stored)

    assert isinstance(rebuilt, RetriesExhausted)
    assert (rebuilt.external_id, rebuilt.attempts) == ("AAAAAAAAAAE", 10)
    assert rebuilt.last_error["error"] == "RateLimited"
    assert "gave up after 10 attempt(s)" in str(rebuilt)
