"""Kraken's request signature and the credentials that feed it.

``API-Sign = base64(HMAC-SHA512(base64decode(secret), path + SHA256(nonce + body)))``.
The decoded secret lives only inside :class:`Credentials`; nothing that prints, logs,
pickles or raises shows it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

from kraken.pay.errors import ConfigurationError

__all__ = ["Credentials", "sign"]


def _decode_secret(secret: str | bytes) -> bytes:
    try:
        decoded = base64.b64decode(secret, validate=True)
    except (binascii.Error, ValueError, TypeError):
        # `from None`: the original exception's message may quote the secret.
        raise ConfigurationError(
            "api_secret: must be the base64 text Kraken shows for the key (it does not decode)"
        ) from None
    if not decoded:
        raise ConfigurationError("api_secret: must not be empty")
    return decoded


def _signature(urlpath: str, nonce: int | str, body: bytes, key: bytes) -> str:
    digest = hashlib.sha256(str(nonce).encode() + body).digest()
    mac = hmac.new(key, urlpath.encode() + digest, hashlib.sha512)
    return base64.b64encode(mac.digest()).decode()


def sign(urlpath: str, nonce: int | str, body: str | bytes, secret: str | bytes) -> str:
    """Return the ``API-Sign`` header for ``body`` sent to ``urlpath`` with ``nonce``.

    ``body`` must be exactly the bytes sent, and ``nonce`` the value that body carries.
    """
    data = body.encode() if isinstance(body, str) else body
    return _signature(urlpath, nonce, data, _decode_secret(secret))


class Credentials:
    """An API key and its secret; the secret is validated once and never shown."""

    __slots__ = ("_key", "api_key")

    def __init__(self, api_key: str, api_secret: str | bytes) -> None:
        if not isinstance(api_key, str) or not api_key.strip():
            raise ConfigurationError("api_key: must be a non-empty string")
        self.api_key = api_key
        self._key = _decode_secret(api_secret)

    def sign(self, urlpath: str, nonce: int | str, body: bytes) -> str:
        return _signature(urlpath, nonce, body, self._key)

    @property
    def secret_size(self) -> int:
        """How many bytes the secret decodes to (64 for Kraken's keys); not a secret."""
        return len(self._key)

    @property
    def key_id(self) -> str:
        """A stable, non-secret name for this key, for Redis keys and logs."""
        return hashlib.sha256(self.api_key.encode()).hexdigest()[:16]

    def __repr__(self) -> str:
        return f"Credentials(api_key={self.api_key[:4]!r}..., api_secret=<redacted>)"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Credentials):
            return NotImplemented
        return self.api_key == other.api_key and hmac.compare_digest(self._key, other._key)

    def __hash__(self) -> int:
        return hash(self.api_key)

    def __reduce__(self):  # pickle, copy.copy and friends would carry the secret
        raise TypeError("Credentials cannot be pickled: the secret must not leave the process")
