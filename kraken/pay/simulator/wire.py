"""What the simulator puts on the wire: Kraken's paths, headers and errors, and its own routes.

Written down here rather than imported from the client, so the simulator states Kraken's side
of the protocol on its own; ``tests/unit/simulator/test_simulator_controls.py`` checks that
both sides agree.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "API_KEY_HEADER",
    "API_SIGN_HEADER",
    "CANCEL_PATH",
    "CONTROL_ROUTES",
    "INVALID_ARGUMENTS",
    "INVALID_EXTERNAL_ID",
    "INVALID_KEY",
    "INVALID_NONCE",
    "INVALID_SIGNATURE",
    "JWKS_PATH",
    "LOCKOUT",
    "MAX_NONCE",
    "PAY_ERROR_CLASS",
    "PAY_MESSAGES",
    "PRIVATE_ROUTE",
    "RATE_LIMIT_EXCEEDED",
    "SERVICE_UNAVAILABLE",
    "UNKNOWN_METHOD",
    "Route",
]

# ------------------------------------------------------------------------------ Kraken's side

CANCEL_PATH = "/0/private/Pay/request/cancel"
PRIVATE_ROUTE = "/0/{method:.*}"  # every private path answers; only CANCEL_PATH exists
API_KEY_HEADER = "API-Key"
API_SIGN_HEADER = "API-Sign"
MAX_NONCE = 2**64 - 1  # Kraken documents the nonce as an unsigned 64-bit integer

INVALID_KEY = "EAPI:Invalid key"
INVALID_SIGNATURE = "EAPI:Invalid signature"
INVALID_NONCE = "EAPI:Invalid nonce"
RATE_LIMIT_EXCEEDED = "EAPI:Rate limit exceeded"
INVALID_ARGUMENTS = "EGeneral:Invalid arguments"
INVALID_EXTERNAL_ID = "EGeneral:Invalid arguments:external_id"
UNKNOWN_METHOD = "EGeneral:Unknown method"
SERVICE_UNAVAILABLE = "EService:Unavailable"
LOCKOUT = "EGeneral:Temporary lockout"

# Pay's refusals are structured errors of this class, one type each.
PAY_ERROR_CLASS = "EPay"
PAY_MESSAGES = {
    "RequestNotFound": "No payment request has this external_id",
    "RequestAlreadyCancelled": "The payment request is already cancelled",
    "RequestNotCancellable": "The payment request is no longer pending and cannot be cancelled",
}

# Where the public keys of the status notifications are served, as Kraken serves its own.
JWKS_PATH = "/.well-known/pay-callback-keys.json"

# ------------------------------------------------------------------------------ the simulator's


@dataclass(frozen=True)
class Route:
    """The HTTP form of one control: ``verb path``, its success status, and where the result is.

    ``result`` names the key of the answer that holds the control's return value; ``None``
    means the whole answer is the value (or, for controls that return nothing, ignored).
    """

    verb: str
    path: str
    status: int = 200
    result: str | None = None


# One entry per control of ``SimulatorControls``, by method name. GET takes its arguments in
# the query string, the others in a JSON object body.
CONTROL_ROUTES: dict[str, Route] = {
    "create_requests": Route("POST", "/_sim/requests", 201, "created"),
    "request": Route("GET", "/_sim/requests"),
    "summary": Route("GET", "/_sim/requests/summary"),
    "cancelled_at": Route("GET", "/_sim/requests/cancelled"),
    "pay": Route("POST", "/_sim/requests/pay"),
    "expire": Route("POST", "/_sim/requests/expire"),
    "set_faults": Route("POST", "/_sim/faults"),
    "clear_faults": Route("DELETE", "/_sim/faults"),
    "faults": Route("GET", "/_sim/faults"),
    "jwks": Route("GET", JWKS_PATH),
    "register_webhook": Route("POST", "/_sim/webhooks", 201, "urls"),
    "webhooks": Route("GET", "/_sim/webhooks", result="urls"),
    "clear_webhooks": Route("DELETE", "/_sim/webhooks"),
    "wait_webhooks": Route("POST", "/_sim/webhooks/wait"),
    "stats": Route("GET", "/_sim/stats"),
    "reset": Route("POST", "/_sim/reset"),
}
