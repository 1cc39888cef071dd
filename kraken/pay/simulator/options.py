"""Every option of the simulator, in one frozen dataclass that all ways of running it share.

``Simulator(**options)``, ``SimulatorThread(**options)``, ``serve(**options)``, the command line
(``python -m kraken.pay.simulator``, whose flags are made from these fields) and the pytest
plugin all build a :class:`SimulatorOptions`, so an option is added in one place.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from kraken.pay import Credentials
from kraken.pay.simulator.webhooks import check_url

__all__ = ["DEMO_API_KEY", "DEMO_API_SECRET", "KIB", "MIB", "SimulatorOptions"]

# A key pair that exists only here: 64 random bytes, as Kraken's secrets are.
DEMO_API_KEY = "SlJULaQFkd4Y4yQoeO3hSWVpU0YTjB4lGgXLqqQLJIFH55EGmqlG3Jk7"
DEMO_API_SECRET = (
    "ZULQ0GlKfFmJd/EA4AfA3V4R0iypwE0JTX70afOir0OLBjM3zcEH6gt+LR4SjUkVWDY3geG3RfsDs0l1ELMuvQ=="
)

KIB = 1024
MIB = 1024 * KIB


def _help(text: str, metavar: str | None = None) -> dict[str, Any]:
    """A field's ``--flag`` help (and metavar): the command line is made from these."""
    return {"help": text, "metavar": metavar}


@dataclass(frozen=True, kw_only=True)
class SimulatorOptions:
    """How a simulator listens, what it checks, how it fails, and what it bounds.

    ``keys`` maps API keys to base64 secrets (default: the demo pair); it is left out of the
    repr, so printing options never shows a secret. Values are checked here, each error
    naming its field.
    """

    keys: Mapping[str, str] | None = field(default=None, repr=False, hash=False)
    host: str = field(default="127.0.0.1", metadata=_help("address to bind", "HOST"))
    port: int = field(default=0, metadata=_help("port, 0 for any free one", "PORT"))
    nonce_window: int = field(
        default=0, metadata=_help("the keys' nonce window, as set at Kraken", "N")
    )
    rate_limit: tuple[float, float] | None = field(
        default=None,
        metadata=_help("a token bucket per key (default: no limit)", "CAPACITY:PER_SECOND"),
    )
    seed: int | None = field(default=None, metadata=_help("seed of the fault draws", "N"))
    access_log: bool = field(default=False, metadata=_help("log every request"))
    latency: tuple[float, float] | None = field(
        default=None,
        metadata=_help("hold each answer this many ms (a range draws uniformly)", "MS[:MS]"),
    )
    accept_form: bool = field(
        default=False,
        metadata=_help("also take form bodies, as Kraken's classic endpoints do"),
    )
    webhooks: tuple[str, ...] = field(
        default=(),
        metadata=_help("send status notifications to URL, also after a reset (repeatable)", "URL"),
    )
    webhook_attempts: int = field(default=5, metadata=_help("tries per notification and URL", "N"))
    webhook_backoff: float = field(
        default=0.2, metadata=_help("seconds before the first retry, doubling", "SECONDS")
    )
    # Bounds on what clients send (docs/bounds.md). A cancel body is a few hundred bytes;
    # bulk creation of 100,000 ids is about 2.7 MB.
    max_api_body: int = field(
        default=4 * KIB, metadata=_help("largest body of a Kraken path (/0/...)", "BYTES")
    )
    max_control_body: int = field(
        default=4 * MIB, metadata=_help("largest body of a control path (/_sim/...)", "BYTES")
    )
    max_json_depth: int = field(
        default=32, metadata=_help("deepest nesting of arrays and objects in a body", "N")
    )
    header_timeout: float = field(
        default=5.0,
        metadata=_help("seconds a new connection has to send its request headers", "SECONDS"),
    )
    body_timeout: float = field(
        default=10.0, metadata=_help("seconds a request has to send its body", "SECONDS")
    )
    keepalive_timeout: float = field(
        default=30.0,
        metadata=_help("seconds an idle kept-alive connection stays open", "SECONDS"),
    )

    def __post_init__(self) -> None:
        keys = {DEMO_API_KEY: DEMO_API_SECRET} if self.keys is None else dict(self.keys)
        if not keys:
            raise ValueError("keys: at least one API key is needed")
        for key, secret in keys.items():
            Credentials(key, secret)  # ConfigurationError (a ValueError); never shows the secret
        object.__setattr__(self, "keys", MappingProxyType(keys))
        if isinstance(self.webhooks, str):
            raise ValueError("webhooks: must be a list of URLs, not a single string")
        object.__setattr__(self, "webhooks", tuple(check_url(url) for url in self.webhooks))
        object.__setattr__(self, "rate_limit", _pair("rate_limit", self.rate_limit))
        object.__setattr__(self, "latency", _pair("latency", self.latency))
        self._check()

    @classmethod
    def of(
        cls,
        keys: Mapping[str, str] | None = None,
        options: SimulatorOptions | None = None,
        **settings: Any,
    ) -> SimulatorOptions:
        """``options`` (default: every default) with ``keys`` and the fields given replaced.

        What ``Simulator(keys, options=..., **settings)`` and its peers are built from.
        """
        if keys is not None:
            settings["keys"] = keys
        if options is None:
            return cls(**settings)
        return replace(options, **settings) if settings else options

    def _check(self) -> None:
        if not isinstance(self.host, str) or not self.host:
            raise ValueError(f"host: must be an address such as 127.0.0.1, not {self.host!r}")
        _whole("port", self.port, 0, 65_535)
        _whole("nonce_window", self.nonce_window, 0, 2**64)
        if self.seed is not None:
            _whole("seed", self.seed, -(2**63), 2**63)
        if self.rate_limit is not None:
            capacity, per_second = self.rate_limit
            if not 1 <= capacity <= 1e9 or not 0 <= per_second <= 1e9:
                raise ValueError(
                    "rate_limit: must be (capacity, per_second) with capacity >= 1 and "
                    f"per_second >= 0, not {self.rate_limit!r}"
                )
        if self.latency is not None and not 0 <= self.latency[0] <= self.latency[1] <= 60:
            raise ValueError(
                "latency: must be (low, high) seconds, 0 <= low <= high <= 60, "
                f"not {self.latency!r}"
            )
        _whole("webhook_attempts", self.webhook_attempts, 1, 100)
        _seconds("webhook_backoff", self.webhook_backoff, 0, 60, zero=True)
        _whole("max_api_body", self.max_api_body, 256, 64 * MIB)
        _whole("max_control_body", self.max_control_body, 256, 1024 * MIB)
        _whole("max_json_depth", self.max_json_depth, 1, 256)
        _seconds("header_timeout", self.header_timeout, 0, 600)
        _seconds("body_timeout", self.body_timeout, 0, 600)
        _seconds("keepalive_timeout", self.keepalive_timeout, 0, 3600)


def _whole(name: str, value: Any, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{name}: must be a whole number from {low:,} to {high:,}, not {value!r}")


def _seconds(name: str, value: Any, low: float, high: float, *, zero: bool = False) -> None:
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    above = number and (value >= low if zero else value > low)
    if not number or not above or not value <= high or math.isnan(value):
        least = f"at least {low}" if zero else f"more than {low}"
        raise ValueError(f"{name}: must be {least} and at most {high} seconds, not {value!r}")


def _pair(name: str, value: Sequence[float] | None) -> tuple[float, float] | None:
    if value is None:
        return None
    try:
        low, high = value
        pair = (float(low), float(high))
    except (TypeError, ValueError):
        raise ValueError(f"{name}: must be a pair of numbers, not {value!r}") from None
    if not all(math.isfinite(part) for part in pair):
        raise ValueError(f"{name}: must be a pair of finite numbers, not {value!r}")
    return pair
