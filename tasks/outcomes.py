"""What Kraken's answer about a payment request means for the caller: one rule, two tasks.

``cancel_request`` (one id) and ``cancel_chunk`` (many) both map Kraken Pay's answers to an
outcome here, so the ambiguity rule cannot drift between them: after an attempt that may
have cancelled the request without our seeing the answer, "already cancelled" means our
own earlier attempt worked.
"""

from __future__ import annotations

from typing import NamedTuple

from kraken.pay import KrakenError, PayRequestError

__all__ = ["OUTCOMES", "Outcome", "kraken_error", "pay_outcome"]

OUTCOMES = ("cancelled", "already_cancelled", "not_cancellable", "not_found")

# PayRequestError.reason -> outcome. A Pay error of another kind is a failure.
_OUTCOME_BY_REASON = {
    "already_cancelled": "already_cancelled",
    "not_cancellable": "not_cancellable",
    "not_found": "not_found",
}


class Outcome(NamedTuple):
    outcome: str
    confirmed_on_retry: bool  # "already cancelled" after our own ambiguous attempt


def pay_outcome(exc: PayRequestError, ambiguous_before: bool) -> Outcome | None:
    """The outcome Kraken's Pay error means, or ``None`` when it is a failure of the call."""
    outcome = _OUTCOME_BY_REASON.get(exc.reason or "")
    if outcome is None:
        return None
    if outcome == "already_cancelled" and ambiguous_before:
        return Outcome("cancelled", True)
    return Outcome(outcome, False)


def kraken_error(exc: BaseException) -> str:
    """Kraken's error as logs and summaries show it: its code (``EAPI:Invalid key``), else text."""
    if isinstance(exc, KrakenError):
        return exc.code or exc.message
    return str(exc)
