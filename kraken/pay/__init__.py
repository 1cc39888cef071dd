"""An asyncio client for Kraken Pay's private REST API; knows nothing of Celery."""

from kraken.pay import errors
from kraken.pay.client import DEFAULT_BASE_URL, KrakenPayClient
from kraken.pay.errors import KrakenError, TerminalError, TransientError
from kraken.pay.external_id import InvalidExternalId, normalize_external_id
from kraken.pay.nonce import ClockNonce, NonceSource, RedisNonce
from kraken.pay.ratelimit import RateBudget
from kraken.pay.signing import Credentials, sign

__all__ = [
    "DEFAULT_BASE_URL",
    "ClockNonce",
    "Credentials",
    "InvalidExternalId",
    "KrakenError",
    "KrakenPayClient",
    "NonceSource",
    "RateBudget",
    "RedisNonce",
    "TerminalError",
    "TransientError",
    "errors",
    "normalize_external_id",
    "sign",
]
