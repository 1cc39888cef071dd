"""The beat schedule of the library: one value a project merges into its own.

In Django settings (``namespace="CELERY"``)::

    from tasks import beat_schedule

    CELERY_KRAKEN_PAY = {"schedule_interval": 1.0}
    CELERY_BEAT_SCHEDULE = {**beat_schedule(CELERY_KRAKEN_PAY), **your_own_entries}

``celeryconfig.py`` (the standalone fleet) does the same. A tick that waited a minute in the
queue is dropped: a later one does its work.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from types import SimpleNamespace
from typing import Any

from tasks.base import task_name
from tasks.parsing import read

__all__ = ["DISPATCH_ENTRY", "SWEEP_ENTRY", "beat_schedule"]

DISPATCH_ENTRY = "kraken-pay-dispatch-due"
SWEEP_ENTRY = "kraken-pay-sweep"
_TICK_EXPIRES = 60.0  # seconds a tick may wait in the queue
_KEYS = ("queue", "schedule_interval", "pay_sweep", "pay_sweep_interval")


def beat_schedule(
    conf: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None
) -> dict[str, dict[str, Any]]:
    """Beat entries for the settings ``conf`` (your ``kraken_pay`` dict), then ``env``.

    ``dispatch_due`` every ``schedule_interval`` seconds; ``sweep`` every
    ``pay_sweep_interval`` seconds when ``pay_sweep`` names your function.
    """
    settings = SimpleNamespace(**read(_KEYS, conf or {}, os.environ if env is None else env))
    schedule = {
        DISPATCH_ENTRY: {
            "task": task_name("dispatch_due"),
            "schedule": settings.schedule_interval,
            "options": {"expires": _TICK_EXPIRES, "queue": settings.queue},
        },
    }
    if settings.pay_sweep:
        schedule[SWEEP_ENTRY] = {
            "task": task_name("sweep"),
            "schedule": settings.pay_sweep_interval,
            "options": {
                "expires": max(_TICK_EXPIRES, settings.pay_sweep_interval),
                "queue": settings.queue,
            },
        }
    return schedule
