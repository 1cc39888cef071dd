"""The exception tree, and the one function that turns an HTTP response into a result or one.

Every failure of a call is exactly one :class:`KrakenError`::

    KrakenError                  every failure of a call to Kraken
    ├── TransientError           the same call may succeed later: retry with backoff
    │   ├── TransportError       no usable answer: refused, reset, timeout, 5xx
    │   │   └── MalformedResponse    an answer that is not Kraken's JSON envelope
    │   ├── RateLimited          slow down (``retry_after``, bounded, or None)
    │   ├── ServiceUnavailable   maintenance, busy, internal error
    │   ├── InvalidNonce         not above the key's last nonce: a fresh one will do
    │   └── TemporaryLockout     too many failures: the key is locked for about 15 minutes
    └── TerminalError            trying again cannot help
        ├── AuthenticationError  bad key, signature or permission
        ├── InvalidRequest       bad arguments, unknown method, other 4xx
        ├── PayRequestError      about the payment request (``reason``: not_found,
        │                        already_cancelled, not_cancellable, or None)
        ├── UnknownApiError      an error this library does not know (raw kept)
        └── ConfigurationError   a client setting that cannot work (also a ValueError)

``transient`` says whether the same call may succeed later; ``ambiguous`` says whether the
call may already have taken effect at Kraken although we saw no answer (a timeout, a reset
after sending, a garbled body), which is what lets a retry read "already cancelled" as
success. Which Kraken error string maps to which class is the table ``_BY_CODE`` below, and
docs/design.md's error table.

Input we are handed rather than an answer to a call we made is a ``ValueError`` of its own
module instead: ``kraken.pay.InvalidExternalId``, and ``kraken.pay.webhooks.InvalidCallback``
for a Kraken Pay notification that does not verify.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timezone
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar

__all__ = [
    "DEFAULT_MAX_RETRY_AFTER",
    "ApiError",
    "AuthenticationError",
    "ConfigurationError",
    "InvalidNonce",
    "InvalidRequest",
    "KrakenError",
    "MalformedResponse",
    "PayRequestError",
    "RateLimited",
    "ServiceUnavailable",
    "TemporaryLockout",
    "TerminalError",
    "TransientError",
    "TransportError",
    "UnknownApiError",
    "parse_response",
    "parse_retry_after",
]

log = logging.getLogger("kraken.pay.errors")

_EXCERPT = 200  # characters of an unparseable body kept for diagnosis

DEFAULT_MAX_RETRY_AFTER = 300.0  # seconds: the longest Retry-After passed on to callers
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?|[+-]?(inf(inity)?|nan)", re.I)


@dataclass(frozen=True)
class ApiError:
    """One entry of Kraken's ``error`` list, classic (``"EAPI:Invalid nonce"``) or structured."""

    severity: str
    error_class: str
    type: str
    message: str
    raw: Any

    @property
    def code(self) -> str:
        """``Class:Message``, the form Kraken's classic errors and its documentation use."""
        return f"{self.error_class}:{self.message}"

    @classmethod
    def parse(cls, item: Any) -> ApiError:
        if isinstance(item, Mapping):
            return cls(
                severity=str(item.get("severity", "E")),
                error_class=str(item.get("errorClass", "")),
                type=str(item.get("type", "")),
                message=str(item.get("errorMessage", "")),
                raw=dict(item),
            )
        text = str(item)
        error_class, _, message = text.partition(":")
        severity = error_class[:1] if error_class[:1] in ("E", "W") else "E"
        return cls(severity, error_class, "", message, text)

    def to_dict(self) -> dict[str, str]:
        return {
            "severity": self.severity,
            "errorClass": self.error_class,
            "type": self.type,
            "errorMessage": self.message,
        }


class KrakenError(Exception):
    """Base of every error this library raises about a call to Kraken."""

    transient: ClassVar[bool] = False

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        errors: tuple[ApiError, ...] = (),
        raw: Any = None,
        ambiguous: bool = False,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.errors = errors
        self.raw = raw
        self.ambiguous = ambiguous

    @property
    def code(self) -> str | None:
        return self.errors[0].code if self.errors else None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe summary for task results and structured logs."""
        return {
            "error": type(self).__name__,
            "message": self.message,
            "status": self.status,
            "transient": self.transient,
            "ambiguous": self.ambiguous,
            "errors": [e.to_dict() for e in self.errors],
        }

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, status={self.status})"


class TransientError(KrakenError):
    """The same call may succeed if tried again later."""

    transient = True


class TerminalError(KrakenError):
    """Trying again cannot help: the request, the key or the configuration is wrong."""


class TransportError(TransientError):
    """No usable answer: connection refused or reset, timeout, 5xx, an unreadable body."""


class MalformedResponse(TransportError):
    """An answer came that is not Kraken's JSON envelope; the call may have taken effect."""


class RateLimited(TransientError):
    """Kraken (or our own shared budget) says to slow down."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.retry_after = retry_after

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "retry_after": self.retry_after}


class ServiceUnavailable(TransientError):
    """Kraken is up but cannot serve the call now (maintenance, busy, internal error)."""


class InvalidNonce(TransientError):
    """The nonce was not above the last one Kraken saw for the key; a fresh one will do."""


class TemporaryLockout(TransientError):
    """Too many failed calls for the key; Kraken locks it for about 15 minutes."""


class AuthenticationError(TerminalError):
    """Bad key, bad signature, missing permission or disabled feature: fix the configuration."""


class InvalidRequest(TerminalError):
    """Kraken refused the call itself: bad arguments, unknown method, other 4xx."""


class PayRequestError(TerminalError):
    """Kraken Pay's answer about the payment request, e.g. unknown or no longer cancellable.

    ``reason`` is ``"not_found"``, ``"already_cancelled"``, ``"not_cancellable"`` or ``None``.
    """

    def __init__(self, message: str, *, reason: str | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.reason = reason

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "reason": self.reason}


class UnknownApiError(TerminalError):
    """An error this library does not know; terminal, with the raw error kept."""


class ConfigurationError(TerminalError, ValueError):
    """The client was built with a value that cannot work (e.g. an undecodable secret)."""


# Kraken's documented errors, by "Class:Message" (case-insensitive). Retry rules live in
# tasks/retry.py; this table only says what happened.
_BY_CODE: dict[str, type[KrakenError]] = {
    "eapi:rate limit exceeded": RateLimited,
    "egeneral:too many requests": RateLimited,
    "eorder:rate limit exceeded": RateLimited,
    "eservice:throttled": RateLimited,  # "EService: Throttled: <unix time>": too many at once
    "eservice:unavailable": ServiceUnavailable,
    "eservice:busy": ServiceUnavailable,
    "eservice:deadline elapsed": ServiceUnavailable,
    "egeneral:internal error": ServiceUnavailable,
    "edatabase:internal error": ServiceUnavailable,
    "eapi:invalid nonce": InvalidNonce,
    "egeneral:temporary lockout": TemporaryLockout,
    "eapi:invalid key": AuthenticationError,
    "eapi:invalid signature": AuthenticationError,
    "egeneral:permission denied": AuthenticationError,
    "eapi:feature disabled": AuthenticationError,
    "egeneral:invalid arguments": InvalidRequest,
    "egeneral:unknown method": InvalidRequest,
    "eapi:bad request": InvalidRequest,
}

# Structured Kraken Pay errors about the payment request, by ``type``. Kraken does not
# publish the list; these are the types the bundled simulator answers with. A Pay error of
# another type is still a PayRequestError, with ``reason=None`` and the raw error kept.
PAY_ERROR_CLASS = "EPay"
PAY_REASONS: dict[str, str] = {
    "RequestNotFound": "not_found",
    "RequestAlreadyCancelled": "already_cancelled",
    "RequestNotCancellable": "not_cancellable",
}


def _error_for(api_error: ApiError) -> type[KrakenError]:
    # Classic errors may carry a detail after a second colon: "EGeneral:Invalid arguments:id".
    error_class, _, rest = api_error.code.lower().partition(":")
    known = _BY_CODE.get(f"{error_class.strip()}:{rest.partition(':')[0].strip()}")
    if known is not None:
        return known
    if api_error.error_class == PAY_ERROR_CLASS:
        return PayRequestError
    return UnknownApiError


def _status_error(
    status: int, body: bytes, headers: Mapping[str, str], cap: float
) -> KrakenError | None:
    """The error an HTTP status alone implies, before the body is read."""
    if status < 500 and status != 429:
        return None
    excerpt = body[:_EXCERPT].decode("utf-8", "replace")
    if status == 429:
        return RateLimited(
            f"HTTP 429 Too Many Requests: {excerpt!r}",
            status=status,
            raw=excerpt,
            retry_after=parse_retry_after(headers.get("Retry-After"), cap=cap),
        )
    if status >= 500:
        # A 5xx (Cloudflare's 52x included) may come after Kraken acted on the call.
        return TransportError(
            f"HTTP {status}: {excerpt!r}", status=status, raw=excerpt, ambiguous=True
        )
    return None


def parse_retry_after(
    value: str | None, *, cap: float = DEFAULT_MAX_RETRY_AFTER, now: float | None = None
) -> float | None:
    """The seconds a ``Retry-After`` value asks for, at most ``cap``; ``None`` if unusable.

    Seconds or an HTTP-date (RFC 9110). The header comes from outside, and one value is
    shared by every worker of the key: an infinite or huge delay is the cap (the server
    means "long"), a date in the past is 0, and NaN, a negative number or anything
    unreadable is ignored, so the caller's own backoff applies.
    """
    if value is None:
        return None
    text = value.strip()
    if _NUMBER.fullmatch(text):
        seconds = float(text)
        if math.isnan(seconds) or seconds < 0:
            return None
    else:
        seconds = _seconds_until(text, time.time() if now is None else now)
        if seconds is None:
            return None
    return min(max(seconds, 0.0), cap)


def _seconds_until(http_date: str, now: float) -> float | None:
    try:
        moment = parsedate_to_datetime(http_date)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if moment.tzinfo is None:  # "-0000": UTC, by RFC 5322's reading
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp() - now


def _decode_envelope(status: int, body: bytes) -> Mapping[str, Any] | KrakenError:
    try:
        envelope = json.loads(body) if body.strip() else None
    except (UnicodeDecodeError, ValueError):
        envelope = None
    if isinstance(envelope, Mapping) and ("error" in envelope or "result" in envelope):
        return envelope
    excerpt = body[:_EXCERPT].decode("utf-8", "replace")
    what = "an empty body" if not body.strip() else f"not Kraken's JSON envelope: {excerpt!r}"
    if 400 <= status < 500:
        return InvalidRequest(f"HTTP {status} with {what}", status=status, raw=excerpt)
    return MalformedResponse(
        f"HTTP {status} with {what}", status=status, raw=excerpt, ambiguous=True
    )


def parse_response(
    status: int,
    body: bytes,
    headers: Mapping[str, str] | None = None,
    *,
    max_retry_after: float = DEFAULT_MAX_RETRY_AFTER,
) -> Any:
    """Return Kraken's ``result`` for a response, or raise the one error it means.

    A ``RateLimited`` carries the response's ``Retry-After``, at most ``max_retry_after``.
    """
    headers = headers or {}
    cap = max_retry_after
    envelope = _decode_envelope(status, body)
    if isinstance(envelope, KrakenError):
        raise _status_error(status, body, headers, cap) or envelope

    raw_errors = envelope.get("error") or []
    if not isinstance(raw_errors, list):
        raw_errors = [raw_errors]
    parsed = [ApiError.parse(item) for item in raw_errors]
    for warning in (e for e in parsed if e.severity == "W"):
        log.warning("kraken warning: %s", warning.code)
    errors = tuple(e for e in parsed if e.severity != "W")

    if errors:
        raise _exception(errors, status, headers, cap)
    status_error = _status_error(status, body, headers, cap)
    if status_error is not None:
        raise status_error
    if status >= 400:
        raise InvalidRequest(f"HTTP {status} without an error", status=status, raw=dict(envelope))
    return envelope.get("result", {})


def _exception(
    errors: tuple[ApiError, ...], status: int, headers: Mapping[str, str], cap: float
) -> KrakenError:
    first = errors[0]
    cls = _error_for(first)
    message = "; ".join(e.code + (f" ({e.type})" if e.type else "") for e in errors)
    kw: dict[str, Any] = {"status": status, "errors": errors, "raw": [e.raw for e in errors]}
    if cls is RateLimited:
        retry_after = parse_retry_after(headers.get("Retry-After"), cap=cap)
        return RateLimited(message, retry_after=retry_after, **kw)
    if cls is PayRequestError:
        return PayRequestError(message, reason=PAY_REASONS.get(first.type), **kw)
    return cls(message, **kw)
