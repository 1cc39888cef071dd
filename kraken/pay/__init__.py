"""An asyncio client for Kraken Pay's private REST API; knows nothing of Celery.

Everything a caller needs is named here; the exception tree is drawn in
:mod:`kraken.pay.errors`.
"""

from kraken.pay import errors
from kraken.pay.client import CANCEL_REQUEST_PATH, DEFAULT_BASE_URL, KrakenPayClient, Ordering
from kraken.pay.errors import (
    ApiError,
    AuthenticationError,
    ConfigurationError,
    InvalidNonce,
    InvalidRequest,
    KrakenError,
    MalformedResponse,
    PayRequestError,
    RateLimited,
    ServiceUnavailable,
    TemporaryLockout,
    TerminalError,
    TransientError,
    TransportError,
    UnknownApiError,
)
from kraken.pay.external_id import InvalidExternalId, normalize_external_id
from kraken.pay.nonce import ClockNonce, NonceSource, RedisNonce
from kraken.pay.ratelimit import STARTER_CAPACITY, STARTER_PER_SECOND, RateBudget
from kraken.pay.signing import Credentials, sign
from kraken.pay.webhooks import (
    KRAKEN_JWKS_URL,
    InvalidCallback,
    PayCallback,
    PayCallbackVerifier,
    aiohttp_handler,
    receive,
)

__all__ = [
    "CANCEL_REQUEST_PATH",
    "DEFAULT_BASE_URL",
    "KRAKEN_JWKS_URL",
    "STARTER_CAPACITY",
    "STARTER_PER_SECOND",
    "ApiError",
    "AuthenticationError",
    "ClockNonce",
    "ConfigurationError",
    "Credentials",
    "InvalidCallback",
    "InvalidExternalId",
    "InvalidNonce",
    "InvalidRequest",
    "KrakenError",
    "KrakenPayClient",
    "MalformedResponse",
    "NonceSource",
    "Ordering",
    "PayCallback",
    "PayCallbackVerifier",
    "PayRequestError",
    "RateBudget",
    "RateLimited",
    "RedisNonce",
    "ServiceUnavailable",
    "TemporaryLockout",
    "TerminalError",
    "TransientError",
    "TransportError",
    "UnknownApiError",
    "aiohttp_handler",
    "errors",
    "normalize_external_id",
    "receive",
    "sign",
]
