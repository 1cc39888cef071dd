"""One table of every setting: its dict key, its variable, its rule and its default.

A value comes from the app's ``kraken_pay`` dict when the key is there, else from the
environment. Every rule is checked here, once, and a value that breaks it is refused in one
line that names where it came from (``kraken_pay['timeout']`` or ``KRAKEN_TIMEOUT``) and the
rule, never the value itself.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from kraken.pay import DEFAULT_BASE_URL, STARTER_CAPACITY, STARTER_PER_SECOND, ConfigurationError
from kraken.pay.webhooks import KRAKEN_JWKS_URL

__all__ = [
    "DEFAULT_QUEUE",
    "DEFAULT_REDIS_URL",
    "MAX_BULK_CHUNK",
    "SPECS",
    "Spec",
    "read",
]

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_QUEUE = "kraken_pay"
MAX_BULK_CHUNK = 5000  # ids in one broker message, whatever bulk_chunk says

_MAX_TEXT = 2048  # characters any one value may have
_QUEUE_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,200}")
_KEY_PREFIX = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_SWEEP_TARGET = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")
_HEADER_SAFE = re.compile(r"[\x21-\x7e]{1,256}")  # printable ASCII, no space, no CR/LF

Parser = Callable[[Any], Any]


class _Refused(ValueError):
    """A value broke its rule; the message is the rule."""


@dataclass(frozen=True)
class Spec:
    key: str  # in app.conf.kraken_pay
    env: str  # the environment variable
    parse: Parser  # raw value (str from the environment, anything from the dict) -> value
    default: Any

    def read(self, conf: Mapping[str, Any], env: Mapping[str, str]) -> Any:
        if self.key in conf and conf[self.key] is not None:
            raw, where = conf[self.key], f"kraken_pay[{self.key!r}]"
        else:
            raw, where = env.get(self.env), self.env
        if isinstance(raw, str):
            raw = raw.strip()
            if len(raw) > _MAX_TEXT:
                raise ConfigurationError(f"{where}: must be at most {_MAX_TEXT} characters")
        if raw is None or raw == "":
            return self.default
        try:
            return self.parse(raw)
        except _Refused as exc:
            raise ConfigurationError(f"{where}: {exc}") from None


def _number(low: float, high: float, unit: str = "seconds") -> Parser:
    def parse(raw: Any) -> float:
        try:
            value = float(raw)
        except (TypeError, ValueError):
            raise _Refused(f"must be a number of {unit}") from None
        if not (math.isfinite(value) and low <= value <= high):
            raise _Refused(f"must be a number of {unit} from {low:g} to {high:g}")
        return value

    return parse


def _integer(low: int, high: int) -> Parser:
    def parse(raw: Any) -> int:
        if isinstance(raw, bool):
            raise _Refused("must be a whole number")
        try:
            value = int(raw)
        except (TypeError, ValueError):
            raise _Refused("must be a whole number") from None
        if not low <= value <= high:
            raise _Refused(f"must be a whole number from {low} to {high}")
        return value

    return parse


def _text(raw: Any) -> str:
    if not isinstance(raw, str):
        raise _Refused("must be a string")
    return raw


def _api_key(raw: Any) -> str:
    if not isinstance(raw, str) or not _HEADER_SAFE.fullmatch(raw):
        raise _Refused("must be up to 256 printable ASCII characters, without spaces or newlines")
    return raw


def _url(schemes: tuple[str, ...]) -> Parser:
    def parse(raw: Any) -> str:
        if not isinstance(raw, str):
            raise _Refused("must be a URL string")
        try:
            parts = urlsplit(raw)
        except ValueError:
            raise _Refused(f"must be a URL ({' or '.join(schemes)})") from None
        if parts.scheme not in schemes:
            raise _Refused(f"must be a URL whose scheme is {' or '.join(schemes)}")
        if parts.scheme != "unix" and not parts.hostname:
            raise _Refused("must be a URL with a host")
        return raw.rstrip("/") if parts.scheme.startswith("http") else raw

    return parse


def _choice(*choices: str) -> Parser:
    def parse(raw: Any) -> str:
        value = str(raw).lower()
        if value not in choices:
            raise _Refused(f"must be {' or '.join(repr(c) for c in choices)}")
        return value

    return parse


def _queue(raw: Any) -> str:
    if not isinstance(raw, str) or not _QUEUE_NAME.fullmatch(raw):
        raise _Refused("must be a queue name of letters, digits and _.:- (at most 200)")
    return raw


def _prefix(raw: Any) -> str:
    if not isinstance(raw, str) or not _KEY_PREFIX.fullmatch(raw):
        raise _Refused("must be a Redis key prefix of letters, digits and _.:- (at most 64)")
    return raw


def _rate(raw: Any) -> float | None:
    if str(raw).lower() in ("off", "0", "0.0", "false"):
        return None
    return _number(0.001, 1000.0, "calls per second")(raw)


def _flag(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    value = str(raw).lower()
    if value not in ("1", "true", "yes", "on", "0", "false", "no", "off"):
        raise _Refused("must be true or false (1/0, yes/no, on/off)")
    return value in ("1", "true", "yes", "on")


def _target(example: str) -> Parser:
    def parse(raw: Any) -> str:
        if not isinstance(raw, str) or not _SWEEP_TARGET.fullmatch(raw):
            raise _Refused(f"must be 'module:function', such as {example!r}")
        return raw

    return parse


_sweep = _target("shop.sweeps:abandoned")


SPECS: tuple[Spec, ...] = (
    Spec("api_key", "KRAKEN_API_KEY", _api_key, ""),
    Spec("api_secret", "KRAKEN_API_SECRET", _text, ""),
    Spec("api_url", "KRAKEN_API_URL", _url(("https", "http")), DEFAULT_BASE_URL),
    Spec("redis_url", "REDIS_URL", _url(("redis", "rediss", "unix")), DEFAULT_REDIS_URL),
    Spec("redis_prefix", "KRAKEN_REDIS_PREFIX", _prefix, "kraken"),
    Spec("ledger_grace", "KRAKEN_LEDGER_GRACE", _number(5.0, 3600.0), 120.0),
    Spec("queue", "KRAKEN_QUEUE", _queue, DEFAULT_QUEUE),
    Spec("ordering", "KRAKEN_ORDERING", _choice("serial", "window"), "serial"),
    Spec("timeout", "KRAKEN_TIMEOUT", _number(0.1, 300.0), 10.0),
    Spec("late_landing_grace", "KRAKEN_LATE_LANDING_GRACE", _number(0.0, 600.0), 3.0),
    Spec("retry_base_delay", "KRAKEN_RETRY_BASE_DELAY", _number(0.001, 3600.0), 1.0),
    Spec("retry_max_delay", "KRAKEN_RETRY_MAX_DELAY", _number(0.01, 86400.0), 300.0),
    Spec("retry_max_attempts", "KRAKEN_RETRY_MAX_ATTEMPTS", _integer(1, 1000), 10),
    Spec("retry_deadline", "KRAKEN_RETRY_DEADLINE", _number(1.0, 7 * 86400.0), 3600.0),
    Spec("rate_capacity", "KRAKEN_RATE_CAPACITY", _number(1.0, 1e4, "calls"), STARTER_CAPACITY),
    Spec("rate_per_second", "KRAKEN_RATE_PER_SECOND", _rate, STARTER_PER_SECOND),
    Spec("rate_max_wait", "KRAKEN_RATE_MAX_WAIT", _number(0.0, 600.0), 10.0),
    Spec("max_retry_after", "KRAKEN_MAX_RETRY_AFTER", _number(1.0, 86400.0), 300.0),
    Spec("max_response_bytes", "KRAKEN_MAX_RESPONSE_BYTES", _integer(1024, 64 << 20), 4 << 20),
    Spec("bulk_chunk", "KRAKEN_BULK_CHUNK", _integer(1, MAX_BULK_CHUNK), 1000),
    Spec("bulk_concurrency", "KRAKEN_BULK_CONCURRENCY", _integer(1, 256), 8),
    Spec("schedule_interval", "KRAKEN_SCHEDULE_INTERVAL", _number(0.1, 3600.0), 1.0),
    Spec("pay_sweep", "KRAKEN_PAY_SWEEP", _sweep, ""),
    Spec("soft_time_limit", "KRAKEN_SOFT_TIME_LIMIT", _number(1.0, 86400.0), None),
    Spec("time_limit", "KRAKEN_TIME_LIMIT", _number(1.0, 86400.0), None),
    Spec("pay_sweep_interval", "KRAKEN_PAY_SWEEP_INTERVAL", _number(1.0, 86400.0), 300.0),
    Spec("pay_metrics_port", "KRAKEN_PAY_METRICS_PORT", _integer(1, 65535), None),
    Spec("log_json", "KRAKEN_LOG_JSON", _flag, False),
    Spec("jwks_url", "KRAKEN_JWKS_URL", _url(("https", "http")), KRAKEN_JWKS_URL),
    Spec("callback_hook", "KRAKEN_CALLBACK_HOOK", _target("shop.payments:on_status"), ""),
)


def read(keys: tuple[str, ...], conf: Mapping[str, Any], env: Mapping[str, str]) -> dict[str, Any]:
    """Only the settings ``keys``: what beat's schedule needs must not fail for a bad value
    that only a worker reads (the worker refuses it when it starts)."""
    return {spec.key: spec.read(conf, env) for spec in SPECS if spec.key in keys}
