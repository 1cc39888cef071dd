"""Kraken's callback keys: cached per ``kid`` forever, fetched again only for an unknown one.

Kraken's guide says a ``kid`` always names the same key, so a key once loaded is never replaced
and never expires. The ``kid`` of a token is read before its signature can be checked, so anyone
can send made-up ones: the JWKS is fetched at most once per ``min_interval`` whatever arrives,
with a total timeout and a size bound, so a flood of forged ``kid``\\ s costs one fetch an
interval and a slow or huge answer cannot hold a worker.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import threading
import time
import urllib.error
import urllib.request
import weakref
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp
import jwt

from kraken.pay.webhooks.callback import InvalidCallback

__all__ = ["KeySet"]

log = logging.getLogger("kraken.pay.webhooks")

_CHUNK = 16 * 1024
_HEADERS = {"Accept": "application/json", "User-Agent": "kraken-pay-cancel"}


class _FetchFailed(Exception):
    """The JWKS could not be had; the message says why, for the log and the error."""


class KeySet:
    """ES256 public keys by ``kid``, shared by threads and event loops of one process."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float,
        max_bytes: int,
        min_interval: float,
        jwks: Mapping[str, Any] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self._timeout = timeout
        self._max_bytes = max_bytes
        self._min_interval = min_interval
        self._clock = clock
        self._keys: dict[str, jwt.PyJWK] = {}
        self._state = threading.Lock()  # guards _keys, _next_fetch, _last_error, fetches
        self._sync_fetch = threading.Lock()  # one fetch at a time among threads
        self._async_fetch: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock]
        self._async_fetch = weakref.WeakKeyDictionary()
        self._next_fetch = -math.inf
        self._last_error: str | None = None
        self.fetches = 0
        if jwks is not None:
            try:
                self._add(jwks)
            except _FetchFailed as exc:
                raise ValueError(f"jwks: {exc}") from None

    def __len__(self) -> int:
        return len(self._keys)

    # -------------------------------------------------------------------- lookup

    def get(self, kid: str) -> jwt.PyJWK:
        """The key named ``kid``, fetching the JWKS first if it is unknown and allowed."""
        key = self._keys.get(kid)
        if key is not None:
            return key
        with self._sync_fetch:  # a thread that waited finds the key another one fetched
            key = self._keys.get(kid)
            if key is None and self._may_fetch():
                self._finish(self._fetch_in_thread)
        return self._known(kid)

    async def aget(self, kid: str) -> jwt.PyJWK:
        """:meth:`get` for event loops: the fetch runs on the loop, through aiohttp."""
        key = self._keys.get(kid)
        if key is not None:
            return key
        loop = asyncio.get_running_loop()
        with self._state:
            lock = self._async_fetch.setdefault(loop, asyncio.Lock())
        async with lock:  # concurrent notifications for a new kid share one fetch
            if self._keys.get(kid) is None and self._may_fetch():
                try:
                    body = await self._fetch_on_loop()
                except _FetchFailed as exc:
                    self._failed(str(exc))
                else:
                    self._fetched(body)
        return self._known(kid)

    def _known(self, kid: str) -> jwt.PyJWK:
        key = self._keys.get(kid)
        if key is not None:
            return key
        if self._last_error is not None:
            raise InvalidCallback("jwks_unavailable", f"jwks: {self._last_error}")
        raise InvalidCallback(
            "unknown_key",
            f"kid: {kid[:64]!r} is not in the JWKS (fetched again at most every "
            f"{self._min_interval:g}s)",
        )

    def _may_fetch(self) -> bool:
        with self._state:
            now = self._clock()
            if now < self._next_fetch:
                return False
            self._next_fetch = now + self._min_interval
            self.fetches += 1
            return True

    def _finish(self, fetch: Callable[[], bytes]) -> None:
        try:
            body = fetch()
        except _FetchFailed as exc:
            self._failed(str(exc))
        else:
            self._fetched(body)

    def _failed(self, why: str) -> None:
        log.warning("kraken pay callback keys: cannot fetch %s: %s", self.url, why)
        self._last_error = why

    def _fetched(self, body: bytes) -> None:
        try:
            self._add(json.loads(body))
        except ValueError:  # UnicodeDecodeError included
            self._failed("not valid JSON")
        except _FetchFailed as exc:
            self._failed(str(exc))
        else:
            self._last_error = None

    # -------------------------------------------------------------------- parsing

    def _add(self, jwks: Any) -> None:
        keys = jwks.get("keys") if isinstance(jwks, Mapping) else None
        if not isinstance(keys, list):
            raise _FetchFailed("must be an object with a 'keys' list")
        loaded = {kid: key for kid, key in map(_es256_key, keys) if kid is not None}
        with self._state:
            for kid, key in loaded.items():
                self._keys.setdefault(kid, key)  # a kid always names the same key

    # -------------------------------------------------------------------- fetching

    def _fetch_in_thread(self) -> bytes:
        deadline = time.monotonic() + self._timeout
        request = urllib.request.Request(self.url, headers=_HEADERS)
        try:
            with urllib.request.urlopen(request, timeout=self._timeout) as response:
                return self._bounded(iter(lambda: response.read(_CHUNK), b""), deadline)
        except urllib.error.HTTPError as exc:
            raise _FetchFailed(f"HTTP {exc.code}") from None
        except (OSError, ValueError) as exc:  # URLError, timeouts and resets are OSErrors
            raise _FetchFailed(f"{type(exc).__name__}: {exc}") from None

    async def _fetch_on_loop(self) -> bytes:
        timeout = aiohttp.ClientTimeout(total=self._timeout)
        try:
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.get(self.url, headers=_HEADERS, allow_redirects=True) as response,
            ):
                if response.status != 200:
                    raise _FetchFailed(f"HTTP {response.status}")
                chunks = []
                size = 0
                async for chunk in response.content.iter_chunked(_CHUNK):
                    size += len(chunk)
                    if size > self._max_bytes:
                        raise _FetchFailed(f"larger than {self._max_bytes} bytes")
                    chunks.append(chunk)
                return b"".join(chunks)
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise _FetchFailed(f"{type(exc).__name__}: {exc}") from None

    def _bounded(self, chunks: Any, deadline: float) -> bytes:
        body = bytearray()
        for chunk in chunks:
            body += chunk
            if len(body) > self._max_bytes:
                raise _FetchFailed(f"larger than {self._max_bytes} bytes")
            if time.monotonic() > deadline:
                raise _FetchFailed(f"not answered within {self._timeout:g}s")
        return bytes(body)


def _es256_key(item: Any) -> tuple[str | None, jwt.PyJWK | None]:
    """``(kid, key)`` for a public P-256 signing key; ``(None, None)`` for anything else."""
    if not isinstance(item, Mapping):
        return None, None
    kid = item.get("kid")
    if not isinstance(kid, str) or not kid:
        return None, None
    if item.get("kty") != "EC" or item.get("crv") != "P-256":
        return None, None
    if item.get("alg", "ES256") != "ES256" or item.get("use", "sig") != "sig":
        return None, None
    public = {name: value for name, value in item.items() if name != "d"}  # never a private key
    try:
        return kid, jwt.PyJWK(public, algorithm="ES256")
    except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError):
        log.warning("kraken pay callback keys: ignoring the malformed key %r", kid[:64])
        return None, None
