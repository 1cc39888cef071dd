"""The faults the demo's simulator injects, and the error class the client raises for each.

The fault rate is shared equally between the kinds (tests/unit/cli/test_demo_report.py
checks the pairs against the simulator). Each is one the tasks must ride out: the connection
dropped before or after Kraken acted, a proxy's 5xx page, a cut-off body, a rate limit,
maintenance.
"""

from __future__ import annotations

__all__ = ["FAULT_ERRORS", "FAULT_KINDS", "fault_spec"]

FAULT_ERRORS = {
    "reset_before": "TransportError",
    "reset_after": "TransportError",
    "http_5xx": "TransportError",
    "malformed_json": "MalformedResponse",
    "rate_limit": "RateLimited",
    "service_unavailable": "ServiceUnavailable",
}
FAULT_KINDS = tuple(FAULT_ERRORS)


def fault_spec(rate: float) -> dict[str, dict[str, float]]:
    """Faults for the simulator so that about ``rate`` of calls meet one (kinds draw in turn)."""
    if rate <= 0:
        return {}
    each = 1 - (1 - rate) ** (1 / len(FAULT_KINDS))
    return {kind: {"rate": round(each, 6)} for kind in FAULT_KINDS}
