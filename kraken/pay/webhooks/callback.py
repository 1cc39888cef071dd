"""What one verified Kraken Pay notification says, and why a token is refused.

The claims' schema is Kraken's guide "Pay webhook notifications": ``iss`` is ``kraken-pay``,
``aud`` a string or null (unused), ``exp`` a Unix time, and ``payload`` carries ``external_id``,
``status`` and ``customer_kraktag``. Fields Kraken may add later are kept in ``claims`` and
otherwise ignored.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

__all__ = ["ISSUER", "REASONS", "STATUSES", "InvalidCallback", "PayCallback", "parse_claims"]

ISSUER = "kraken-pay"
STATUSES = frozenset({"success", "failed", "cancelled", "expired", "declined"})
MAX_EXTERNAL_ID = 64  # characters; Kraken's ids are 1 to 16 bytes in base64 (22 characters)
_MAX_EXP = 253_402_300_799  # 9999-12-31T23:59:59Z, the last second a datetime can hold

# Why a token is refused. ``jwks_unavailable`` is the only one that is not the token's fault:
# the receiver answers it with a 5xx so that Kraken sends the notification again.
REASONS = frozenset(
    {
        "not_a_jwt",
        "bad_header",
        "bad_algorithm",
        "unknown_key",
        "bad_signature",
        "wrong_issuer",
        "expired",
        "bad_claim",
        "jwks_unavailable",
    }
)


class InvalidCallback(ValueError):
    """A notification that cannot be trusted; ``reason`` is one of :data:`REASONS`.

    A ``ValueError`` like :class:`kraken.pay.InvalidExternalId`, not a ``KrakenError``: it is
    about input we were handed, not about a call we made. The message names the field and the
    rule, never the token.
    """

    def __init__(self, reason: str, detail: str) -> None:
        if reason not in REASONS:
            raise ValueError(f"reason: must be one of {sorted(REASONS)}, got {reason!r}")
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail

    @property
    def transient(self) -> bool:
        """True when the same token may verify later (the JWKS could not be fetched)."""
        return self.reason == "jwks_unavailable"

    def __repr__(self) -> str:
        return f"InvalidCallback({self.reason!r}, {self.detail!r})"


@dataclass(frozen=True)
class PayCallback:
    """One verified status change of a payment request.

    ``notification_id`` is the same for every delivery of one status change (Kraken's retries,
    duplicates, a token signed again), so a hook that remembers it handles a repeat once.
    """

    external_id: str
    status: str
    customer_kraktag: str | None
    expires_at: datetime
    claims: Mapping[str, Any] = field(repr=False, compare=False, hash=False)

    @property
    def notification_id(self) -> str:
        digest = hashlib.sha256(f"{self.external_id}\n{self.status}".encode()).hexdigest()
        return digest[:32]

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe, for a Celery task argument: ``PayCallback.from_dict`` reverses it."""
        return {
            "external_id": self.external_id,
            "status": self.status,
            "customer_kraktag": self.customer_kraktag,
            "expires_at": int(self.expires_at.timestamp()),
            "notification_id": self.notification_id,
            "claims": json.loads(json.dumps(self.claims)),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PayCallback:
        """Rebuild a callback from :meth:`to_dict`; the claims are checked again, not signed."""
        claims = data.get("claims")
        if not isinstance(claims, Mapping):
            raise InvalidCallback("bad_claim", "claims: must be an object")
        return parse_claims(claims, now=None)


def _payload(claims: Mapping[str, Any]) -> Mapping[str, Any]:
    payload = claims.get("payload")
    if not isinstance(payload, Mapping):
        raise InvalidCallback("bad_claim", "payload: must be an object")
    return payload


def _exp(claims: Mapping[str, Any]) -> float:
    exp = claims.get("exp")
    number = isinstance(exp, (int, float)) and not isinstance(exp, bool)
    if not number or not 0 <= exp <= _MAX_EXP:  # NaN fails the range too
        raise InvalidCallback("bad_claim", f"exp: must be a Unix time in seconds, got {exp!r}")
    return float(exp)


def _optional_str(payload: Mapping[str, Any], name: str) -> str | None:
    value = payload.get(name)
    if value is not None and not isinstance(value, str):
        raise InvalidCallback(
            "bad_claim", f"payload.{name}: must be a string or null, got {value!r}"
        )
    return value


def parse_claims(
    claims: Mapping[str, Any], *, now: float | None, leeway: float = 0.0
) -> PayCallback:
    """Check the claims of a token whose signature was verified; ``now=None`` skips expiry."""
    iss = claims.get("iss")
    if iss != ISSUER:
        raise InvalidCallback("wrong_issuer", f"iss: must be {ISSUER!r}, got {iss!r}")
    exp = _exp(claims)
    if now is not None and exp + leeway <= now:
        raise InvalidCallback("expired", f"exp: expired {now - exp:.0f}s ago")
    aud = claims.get("aud")
    if aud is not None and not isinstance(aud, str):
        raise InvalidCallback("bad_claim", f"aud: must be a string or null, got {aud!r}")
    payload = _payload(claims)
    external_id = payload.get("external_id")
    if not isinstance(external_id, str) or not 0 < len(external_id) <= MAX_EXTERNAL_ID:
        raise InvalidCallback(
            "bad_claim", f"payload.external_id: must be a string of 1 to {MAX_EXTERNAL_ID} chars"
        )
    status = payload.get("status")
    if status not in STATUSES:
        raise InvalidCallback(
            "bad_claim", f"payload.status: must be one of {sorted(STATUSES)}, got {status!r}"
        )
    kraktag = _optional_str(payload, "customer_kraktag")
    return PayCallback(
        external_id=external_id,
        status=status,
        customer_kraktag=kraktag,
        expires_at=datetime.fromtimestamp(exp, tz=timezone.utc),
        claims=dict(claims),
    )
