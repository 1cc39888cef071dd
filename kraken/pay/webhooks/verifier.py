"""``PayCallbackVerifier``: a Kraken Pay notification's JWT in, a trusted ``PayCallback`` out.

The token's header is untrusted input: only ``alg`` ES256 is accepted whatever it says, so
``none`` and HS256-with-the-public-key-as-secret never reach a key; a key the token names
itself (``jwk``, ``jku``, ``x5u``, ``x5c``) is refused, since only Kraken's JWKS is trusted.
Signatures are checked by PyJWT; this module only decides which key and which claims.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from typing import Any

import jwt
from jwt.api_jws import PyJWS

from kraken.pay.webhooks.callback import InvalidCallback, PayCallback, parse_claims
from kraken.pay.webhooks.keys import KeySet

__all__ = ["KRAKEN_JWKS_URL", "MAX_TOKEN_CHARS", "PayCallbackVerifier"]

KRAKEN_JWKS_URL = "https://www.kraken.com/.well-known/pay-callback-keys.json"
ALGORITHM = "ES256"
MAX_TOKEN_CHARS = 8192  # Kraken's tokens are a few hundred characters
_MAX_KID_CHARS = 256
# Header parameters that carry or point to a key, or change how the token is read.
_REFUSED_HEADERS = ("jwk", "jku", "x5u", "x5c", "x5t", "x5t#S256", "crit", "b64")


class PayCallbackVerifier:
    """Verifies Kraken Pay notifications against the keys of ``jwks_url``.

    ``timeout`` and ``max_jwks_bytes`` bound one JWKS fetch; ``min_refetch_interval`` is the
    shortest time between two fetches, however many unknown ``kid``\\ s arrive; ``leeway`` is
    the clock skew allowed on ``exp``; ``jwks`` preloads keys (a dict as the JWKS serves it),
    for tests or for pinning. One verifier serves a whole process: threads and event loops.
    """

    def __init__(
        self,
        jwks_url: str = KRAKEN_JWKS_URL,
        *,
        timeout: float = 5.0,
        max_jwks_bytes: int = 64 * 1024,
        min_refetch_interval: float = 10.0,
        leeway: float = 60.0,
        jwks: Mapping[str, Any] | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if not jwks_url.startswith(("https://", "http://")):
            raise ValueError(f"jwks_url: must be an http(s) URL, got {jwks_url!r}")
        for name, value in (
            ("timeout", timeout),
            ("max_jwks_bytes", max_jwks_bytes),
            ("min_refetch_interval", min_refetch_interval),
        ):
            if not value > 0:
                raise ValueError(f"{name}: must be > 0, got {value!r}")
        if not leeway >= 0:
            raise ValueError(f"leeway: must be >= 0, got {leeway!r}")
        self._keys = KeySet(
            jwks_url,
            timeout=timeout,
            max_bytes=max_jwks_bytes,
            min_interval=min_refetch_interval,
            jwks=jwks,
            clock=monotonic,
        )
        self._leeway = leeway
        self._clock = clock
        self._jws = PyJWS(algorithms=[ALGORITHM])

    @property
    def jwks_url(self) -> str:
        return self._keys.url

    @property
    def fetches(self) -> int:
        """How many times the JWKS was fetched (or tried), for monitoring and tests."""
        return self._keys.fetches

    def __repr__(self) -> str:
        return f"PayCallbackVerifier(jwks_url={self.jwks_url!r}, keys={len(self._keys)})"

    def verify(self, token: str | bytes) -> PayCallback:
        """The callback ``token`` carries, or :class:`InvalidCallback` saying why not."""
        text, kid = _read_header(token)
        return self._check(text, self._keys.get(kid))

    async def averify(self, token: str | bytes) -> PayCallback:
        """:meth:`verify` for event loops: a JWKS fetch, if one is needed, does not block."""
        text, kid = _read_header(token)
        return self._check(text, await self._keys.aget(kid))

    def _check(self, token: str, key: jwt.PyJWK) -> PayCallback:
        try:
            decoded = self._jws.decode_complete(token, key=key.key, algorithms=[ALGORITHM])
        except jwt.InvalidSignatureError:
            raise InvalidCallback(
                "bad_signature", "signature: does not match the key its kid names"
            ) from None
        except jwt.InvalidAlgorithmError:
            raise InvalidCallback("bad_algorithm", f"alg: only {ALGORITHM} is accepted") from None
        except jwt.DecodeError as exc:
            raise InvalidCallback("not_a_jwt", f"token: {exc}") from None
        try:
            claims = json.loads(decoded["payload"])
        except ValueError:
            claims = None
        if not isinstance(claims, dict):
            raise InvalidCallback("not_a_jwt", "payload: must be a JSON object")
        return parse_claims(claims, now=self._clock(), leeway=self._leeway)


def _as_text(token: Any) -> str:
    if isinstance(token, (bytes, bytearray, memoryview)):
        try:
            token = bytes(token).decode("ascii")
        except UnicodeDecodeError:
            raise InvalidCallback("not_a_jwt", "token: must be ASCII") from None
    if not isinstance(token, str):
        raise InvalidCallback("not_a_jwt", f"token: must be a string, got {type(token).__name__}")
    token = token.strip()
    if len(token) > MAX_TOKEN_CHARS:
        raise InvalidCallback("not_a_jwt", f"token: must be at most {MAX_TOKEN_CHARS} characters")
    if token.count(".") != 2:
        raise InvalidCallback("not_a_jwt", "token: must be three base64url parts joined by dots")
    return token


def _read_header(token: Any) -> tuple[str, str]:
    """The token as text and the ``kid`` of its header, once the header passed every rule."""
    text = _as_text(token)
    try:
        header = jwt.get_unverified_header(text)
    except jwt.DecodeError as exc:
        raise InvalidCallback("not_a_jwt", f"header: {exc}") from None
    except jwt.InvalidTokenError as exc:
        raise InvalidCallback("bad_header", f"header: {exc}") from None
    alg = header.get("alg")
    if alg != ALGORITHM:
        raise InvalidCallback("bad_algorithm", f"alg: only {ALGORITHM} is accepted, got {alg!r}")
    for name in _REFUSED_HEADERS:
        if name in header:
            raise InvalidCallback("bad_header", f"{name}: not accepted; keys come from the JWKS")
    kid = header.get("kid")
    if not isinstance(kid, str) or not 0 < len(kid) <= _MAX_KID_CHARS:
        raise InvalidCallback("bad_header", f"kid: must be a string of 1 to {_MAX_KID_CHARS} chars")
    return text, kid
