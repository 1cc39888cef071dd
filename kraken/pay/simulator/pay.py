"""The simulated Kraken Pay endpoint: Kraken's checks, in Kraken's order, with Kraken's answers.

Every answer is HTTP 200 with Kraken's envelope; only the bytes differ, so the handler
returns ready-made bytes and the common answers are built once.
"""

from __future__ import annotations

import hmac
import json
import urllib.parse
from collections.abc import Mapping
from typing import Any

from kraken.pay import Credentials, InvalidExternalId, normalize_external_id
from kraken.pay.simulator.bodies import loads_object
from kraken.pay.simulator.state import Counters, NonceGuard, PaymentRequests, TokenBuckets
from kraken.pay.simulator.wire import (
    CANCEL_PATH,
    INVALID_ARGUMENTS,
    INVALID_EXTERNAL_ID,
    INVALID_KEY,
    INVALID_NONCE,
    INVALID_SIGNATURE,
    LOCKOUT,
    MAX_NONCE,
    PAY_ERROR_CLASS,
    PAY_MESSAGES,
    RATE_LIMIT_EXCEEDED,
    SERVICE_UNAVAILABLE,
    UNKNOWN_METHOD,
)

__all__ = ["KrakenPay", "answer", "error_body"]

_MAX_NONCE_DIGITS = len(str(MAX_NONCE))


def error_body(*errors: str | Mapping[str, str]) -> bytes:
    """Kraken's envelope for a failed call."""
    return json.dumps({"error": list(errors)}, separators=(",", ":")).encode()


def _pay_error(error_type: str) -> bytes:
    return error_body(
        {
            "severity": "E",
            "errorClass": PAY_ERROR_CLASS,
            "type": error_type,
            "errorMessage": PAY_MESSAGES[error_type],
        }
    )


_OK = b'{"error":[],"result":{}}'
_ANSWERS = {
    code: error_body(code)
    for code in (
        INVALID_KEY,
        INVALID_SIGNATURE,
        INVALID_NONCE,
        RATE_LIMIT_EXCEEDED,
        INVALID_ARGUMENTS,
        INVALID_EXTERNAL_ID,
        UNKNOWN_METHOD,
        SERVICE_UNAVAILABLE,
        LOCKOUT,
    )
} | {error_type: _pay_error(error_type) for error_type in PAY_MESSAGES}


def answer(code: str) -> bytes:
    """The ready-made body for an error code or Pay error type."""
    return _ANSWERS[code]


class KrakenPay:
    """Kraken's side of ``Pay/request/cancel``: keys, nonces, rate budgets, payment requests."""

    def __init__(
        self,
        keys: Mapping[str, str],
        counters: Counters,
        *,
        nonce_window: int = 0,
        rate_limit: tuple[float, float] | None = None,
        accept_form: bool = False,
        max_json_depth: int = 32,
    ) -> None:
        # accept_form: also take a form body (nonce=...&external_id=...), as Kraken's classic
        # private endpoints do, so clients that only send forms can be measured; off by default.
        self.accept_form = accept_form
        self.max_json_depth = max_json_depth
        # Credentials decodes each secret once and fails loudly on one that is not base64.
        self._credentials = {key: Credentials(key, secret) for key, secret in keys.items()}
        self.counters = counters
        self.requests = PaymentRequests()
        self.nonces = NonceGuard(nonce_window)
        self.buckets = TokenBuckets(*rate_limit) if rate_limit is not None else None

    def reset(self) -> None:
        """Forget payment requests, nonces and rate budgets; keys stay."""
        self.requests.clear()
        self.nonces.clear()
        if self.buckets is not None:
            self.buckets.clear()

    def call(self, path: str, api_key: str | None, api_sign: str | None, body: bytes) -> bytes:
        """Answer one call to a private Kraken path (only ``Pay/request/cancel`` exists)."""
        if path != CANCEL_PATH:
            return _ANSWERS[UNKNOWN_METHOD]
        return self.cancel(api_key, api_sign, body)

    def cancel(self, api_key: str | None, api_sign: str | None, body: bytes) -> bytes:
        counters = self.counters
        credentials = self._credentials.get(api_key) if api_key else None
        if credentials is None:
            counters.key_rejections += 1
            return _ANSWERS[INVALID_KEY]

        payload = loads_object(body, self.max_json_depth)
        if payload is None and self.accept_form:
            payload = _form_object(body)
        if payload is None:
            counters.invalid_arguments += 1
            return _ANSWERS[INVALID_ARGUMENTS]
        raw_nonce = payload.get("nonce")
        if raw_nonce is None:
            counters.nonce_rejections += 1
            return _ANSWERS[INVALID_NONCE]

        expected = credentials.sign(CANCEL_PATH, str(raw_nonce), body)
        if not api_sign or not api_sign.isascii() or not hmac.compare_digest(expected, api_sign):
            counters.signature_rejections += 1
            return _ANSWERS[INVALID_SIGNATURE]

        nonce = _as_nonce(raw_nonce)
        if nonce is None or not self.nonces.accept(credentials.api_key, nonce):
            counters.nonce_rejections += 1
            return _ANSWERS[INVALID_NONCE]

        if self.buckets is not None and not self.buckets.take(credentials.api_key):
            counters.rate_limited += 1
            return _ANSWERS[RATE_LIMIT_EXCEEDED]

        external_id = payload.get("external_id")
        if not _is_canonical(external_id):
            counters.invalid_arguments += 1
            return _ANSWERS[INVALID_EXTERNAL_ID]

        return self._apply(external_id)

    def _apply(self, external_id: str) -> bytes:
        refusal = self.requests.cancel(external_id)
        if refusal is None:
            self.counters.cancels_applied += 1
            return _OK
        if refusal == "RequestAlreadyCancelled":
            self.counters.repeated_cancels += 1
        elif refusal == "RequestNotFound":
            self.counters.not_found += 1
        else:
            self.counters.not_cancellable += 1
        return _ANSWERS[refusal]


def _form_object(body: bytes) -> dict[str, Any] | None:
    try:
        pairs = urllib.parse.parse_qsl(body.decode("ascii"), strict_parsing=True)
    except (UnicodeDecodeError, ValueError):
        return None
    return dict(pairs)


def _as_nonce(value: Any) -> int | None:
    """A nonce is an unsigned 64-bit integer above 0, sent as a JSON number or decimal string."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        if not (value.isascii() and value.isdigit() and len(value) <= _MAX_NONCE_DIGITS):
            return None
        value = int(value)
    if isinstance(value, int) and 0 < value <= MAX_NONCE:
        return value
    return None


def _is_canonical(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        return normalize_external_id(value) == value
    except InvalidExternalId:
        return False
