"""An asyncio client for Kraken Pay's private REST API; knows nothing of Celery."""

from kraken.pay import errors
from kraken.pay.client import DEFAULT_BASE_URL, KrakenPayClient
from kraken.pay.errors import KrakenError, TerminalError, TransientError
from kraken.pay.external_id import InvalidExternalId, normalize_external_id
from kraken.pay.nonce import ClockNonce, NonceSource, RedisNonce
from kraken.pay.ratelimit import RateBudget
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
    "DEFAULT_BASE_URL",
    "KRAKEN_JWKS_URL",
    "ClockNonce",
    "Credentials",
    "InvalidCallback",
    "InvalidExternalId",
    "KrakenError",
    "KrakenPayClient",
    "NonceSource",
    "PayCallback",
    "PayCallbackVerifier",
    "RateBudget",
    "RedisNonce",
    "TerminalError",
    "TransientError",
    "aiohttp_handler",
    "errors",
    "normalize_external_id",
    "receive",
    "sign",
]
