"""An asyncio client for Kraken Pay's private REST API; knows nothing of Celery."""

from kraken import errors
from kraken.client import DEFAULT_BASE_URL, KrakenPayClient
from kraken.errors import KrakenError, TerminalError, TransientError
from kraken.external_id import InvalidExternalId, normalize_external_id
from kraken.nonce import ClockNonce, NonceSource, RedisNonce
from kraken.ratelimit import RateBudget
from kraken.signing import Credentials, sign

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
