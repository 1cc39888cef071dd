"""The one environment of a local worker: the simulator, its demo key, a local Redis.

The demo, the tests and the benchmarks start ``celery -A tasks worker`` (and beat) with
:func:`worker_env`; each passes its own tuning. None of the user's own ``KRAKEN_*``,
``CELERY_*``, ``REDIS_URL`` or Django settings reaches such a worker.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from kraken.pay.simulator import DEMO_API_KEY, DEMO_API_SECRET

__all__ = ["DEMO_TUNING", "QUICK_TUNING", "clean_environ", "worker_env"]

# Short timeouts and quick retries against a simulator on this machine: a fault costs
# milliseconds. The tests' workers run with these.
QUICK_TUNING: Mapping[str, str] = {
    "KRAKEN_TIMEOUT": "1",
    "KRAKEN_RETRY_BASE_DELAY": "0.01",
    "KRAKEN_RETRY_MAX_DELAY": "0.5",
    "KRAKEN_RETRY_MAX_ATTEMPTS": "20",
    "CELERY_VISIBILITY_TIMEOUT": "60",
    # A short late-landing grace: a timed-out call to a local simulator is meant to be quick.
    "KRAKEN_LATE_LANDING_GRACE": "1",
}

# The demo's: a little more patient, as a person watches it rather than a deadline.
DEMO_TUNING: Mapping[str, str] = {
    "KRAKEN_TIMEOUT": "2",
    "KRAKEN_RETRY_BASE_DELAY": "0.05",
    "KRAKEN_RETRY_MAX_DELAY": "1",
    "KRAKEN_RETRY_MAX_ATTEMPTS": "10",
    "KRAKEN_RETRY_DEADLINE": "60",
    "CELERY_VISIBILITY_TIMEOUT": "60",
}

_DROPPED = ("REDIS_URL", "DJANGO_SETTINGS_MODULE")  # Django's would load that site too


def clean_environ(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """``base`` (this process's environment) without the library's, Celery's and Django's
    settings, so only what a local run sets reaches its workers."""
    return {
        name: value
        for name, value in (os.environ if base is None else base).items()
        if not name.startswith(("KRAKEN_", "CELERY_")) and name not in _DROPPED
    }


def worker_env(
    sim_url: str,
    redis_url: str,
    *,
    broker_url: str | None = None,
    backend_url: str | None = None,
    tuning: Mapping[str, str] = QUICK_TUNING,
    **overrides: str,
) -> dict[str, str]:
    """A local worker's environment: the simulator at ``sim_url`` with its demo key, the
    library's Redis at ``redis_url``, no rate budget, then ``tuning`` and ``overrides``.

    Without ``broker_url`` the worker's broker and results are ``redis_url`` too (the
    standalone app's default); ``backend_url`` defaults to the broker.
    """
    env = clean_environ()
    env.update(
        {
            "KRAKEN_API_KEY": DEMO_API_KEY,
            "KRAKEN_API_SECRET": DEMO_API_SECRET,
            "KRAKEN_API_URL": sim_url,
            "REDIS_URL": redis_url,
            # The simulator has no rate limit unless a run injects one, and Kraken's
            # Starter-tier budget would make a few hundred cancels take minutes.
            "KRAKEN_RATE_PER_SECOND": "off",
            "PYTHONUNBUFFERED": "1",
        }
    )
    if broker_url is not None:
        env["CELERY_BROKER_URL"] = broker_url
        env["CELERY_RESULT_BACKEND"] = backend_url or broker_url
    elif backend_url is not None:
        env["CELERY_RESULT_BACKEND"] = backend_url
    env.update(tuning)
    env.update(overrides)
    return env
