"""Bounds on the client's own settings, checked once when it is built.

A value that cannot work (``timeout=inf`` never times out, ``max_connections=-1`` means no
limit to aiohttp) fails at construction with one line naming the argument, instead of
surfacing later as a hung worker or a flood of connections.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

from kraken.pay.errors import DEFAULT_MAX_RETRY_AFTER, ConfigurationError

__all__ = [
    "DEFAULT_MAX_RESPONSE_BYTES",
    "DEFAULT_MAX_RETRY_AFTER",
    "MAX_CONNECTIONS",
    "MAX_RESPONSE_BYTES",
    "MAX_RETRY_AFTER",
    "MAX_TIMEOUT",
    "check_count",
    "check_seconds",
]

DEFAULT_MAX_RESPONSE_BYTES = 4 << 20  # Kraken's answers are a few hundred bytes
MAX_TIMEOUT = 600.0  # seconds; a longer wait outlives Celery's time limits and visibility
MAX_RETRY_AFTER = 86_400.0  # a day: Kraken's longest pause (a lockout) is 15 minutes
MAX_CONNECTIONS = 10_000
MAX_RESPONSE_BYTES = 1 << 30


def check_seconds(name: str, value: Any, *, high: float, zero: bool = False) -> float:
    """``value`` as seconds: finite, above 0 (or 0 too with ``zero``), at most ``high``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigurationError(f"{name}: must be a number of seconds, not {value!r}")
    seconds = float(value)
    low_ok = seconds >= 0 if zero else seconds > 0
    if not (low_ok and math.isfinite(seconds) and seconds <= high):
        low = "0 or more" if zero else "more than 0"
        raise ConfigurationError(
            f"{name}: must be {low} and at most {high:g} seconds, not {value!r}"
        )
    return seconds


def check_count(name: str, value: Any, *, low: int, high: int, unit: str) -> int:
    """``value`` as a whole number of ``unit`` from ``low`` to ``high``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ConfigurationError(f"{name}: must be a whole number of {unit}, not {value!r}")
    if not low <= value <= high:
        raise ConfigurationError(f"{name}: must be from {low:,} to {high:,} {unit}, not {value!r}")
    return int(value)
