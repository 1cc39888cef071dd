"""A worker with a configuration that cannot work refuses to start, in one line, at once."""

from __future__ import annotations

import pytest
from command_support import celery_worker, refusal

from kraken.pay.simulator import DEMO_API_KEY, DEMO_API_SECRET

NOT_BASE64 = "s3cr3t-value-that-is-not-base64!!"


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"KRAKEN_API_SECRET": DEMO_API_SECRET}, "KRAKEN_API_KEY"),
        ({"KRAKEN_API_KEY": DEMO_API_KEY}, "KRAKEN_API_SECRET"),
        ({"KRAKEN_API_KEY": DEMO_API_KEY, "KRAKEN_API_SECRET": NOT_BASE64}, "KRAKEN_API_SECRET"),
    ],
)
def test_a_missing_or_undecodable_credential_stops_the_worker_with_one_line(env, variable):
    completed = celery_worker("--loglevel", "INFO", **env)
    assert completed.returncode != 0
    line = refusal(completed)
    assert f": {variable}:" in line
    assert NOT_BASE64 not in completed.stdout + completed.stderr
    assert "Traceback" not in completed.stderr


def test_a_retry_cap_longer_than_the_visibility_timeout_is_refused_at_start():
    completed = celery_worker(
        "--loglevel",
        "INFO",
        KRAKEN_API_KEY=DEMO_API_KEY,
        KRAKEN_API_SECRET=DEMO_API_SECRET,
        KRAKEN_RETRY_MAX_DELAY="600",
        CELERY_VISIBILITY_TIMEOUT="300",
    )
    assert completed.returncode != 0
    line = refusal(completed)
    assert "CELERY_VISIBILITY_TIMEOUT" in line and "KRAKEN_RETRY_MAX_DELAY" in line
    assert DEMO_API_SECRET not in completed.stdout + completed.stderr
