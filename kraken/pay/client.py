"""KrakenPayClient: signed, kept-alive calls to Kraken's private REST API on aiohttp."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping
from contextlib import suppress
from typing import Any, Literal

import aiohttp
from redis.exceptions import RedisError

from kraken.pay import bounds
from kraken.pay.errors import (
    ConfigurationError,
    InvalidNonce,
    InvalidRequest,
    KrakenError,
    MalformedResponse,
    RateLimited,
    TransportError,
    parse_response,
)
from kraken.pay.external_id import normalize_external_id
from kraken.pay.nonce import ClockNonce, NonceSource
from kraken.pay.ratelimit import RateBudget
from kraken.pay.signing import Credentials

__all__ = ["CANCEL_REQUEST_PATH", "DEFAULT_BASE_URL", "KrakenPayClient", "Ordering"]

DEFAULT_BASE_URL = "https://api.kraken.com"
CANCEL_REQUEST_PATH = "/0/private/Pay/request/cancel"

Ordering = Literal["serial", "window"]

log = logging.getLogger("kraken.pay.client")

# How much longer than one request (and its late-landing grace) the key's turn lives, so a
# dead holder frees it soon but a live one never loses it mid-request.
_LOCK_MARGIN = 2.0
DEFAULT_LATE_LANDING_GRACE = 3.0

# One encoder: json.dumps with options builds a new JSONEncoder on every call.
_JSON = json.JSONEncoder(separators=(",", ":"), allow_nan=False)


class KrakenPayClient:
    """An asyncio client for Kraken's private endpoints, starting with the Pay API.

    ``ordering="serial"`` (default) holds the nonce source's lock from drawing a nonce until
    the response, so calls with one key reach Kraken in nonce order and none is rejected.
    ``ordering="window"`` sends concurrently, for keys with a nonce window, and re-signs an
    ``EAPI:Invalid nonce`` once at once with a fresh nonce.

    What comes back is bounded too: an answer over ``max_response_bytes`` is not read
    further (:class:`~kraken.pay.errors.MalformedResponse`), and a ``Retry-After`` is
    passed on (and held against the shared rate budget) for at most ``max_retry_after``.

    ``late_landing_grace``: in serial mode, after a call timed out (it may still reach
    Kraken), the key's turn is kept that many seconds more before the next nonce is sent, so
    the late call is not overtaken and rejected. See docs/ordering.md for what is guaranteed.
    """

    def __init__(
        self,
        credentials: Credentials,
        *,
        base_url: str = DEFAULT_BASE_URL,
        nonce: NonceSource | None = None,
        ordering: Ordering = "serial",
        timeout: float = 10.0,
        connect_timeout: float | None = 5.0,
        max_connections: int = 100,
        rate_budget: RateBudget | None = None,
        max_response_bytes: int = bounds.DEFAULT_MAX_RESPONSE_BYTES,
        max_retry_after: float = bounds.DEFAULT_MAX_RETRY_AFTER,
        late_landing_grace: float = DEFAULT_LATE_LANDING_GRACE,
    ) -> None:
        if not isinstance(credentials, Credentials):
            raise ConfigurationError("credentials: must be a kraken.Credentials")
        if ordering not in ("serial", "window"):
            raise ConfigurationError(f"ordering: must be 'serial' or 'window', not {ordering!r}")
        timeout = bounds.check_seconds("timeout", timeout, high=bounds.MAX_TIMEOUT)
        if connect_timeout is not None:
            connect_timeout = bounds.check_seconds(
                "connect_timeout", connect_timeout, high=bounds.MAX_TIMEOUT
            )
        max_connections = bounds.check_count(
            "max_connections",
            max_connections,
            low=1,
            high=bounds.MAX_CONNECTIONS,
            unit="connections",
        )
        self.max_response_bytes = bounds.check_count(
            "max_response_bytes",
            max_response_bytes,
            low=1024,
            high=bounds.MAX_RESPONSE_BYTES,
            unit="bytes",
        )
        self.max_retry_after = bounds.check_seconds(
            "max_retry_after", max_retry_after, high=bounds.MAX_RETRY_AFTER, zero=True
        )
        grace = late_landing_grace
        if isinstance(grace, bool) or not isinstance(grace, int | float) or not 0 <= grace <= 600:
            raise ConfigurationError(
                f"late_landing_grace: must be a number of seconds from 0 to 600, not {grace!r}"
            )
        self.late_landing_grace = float(grace)
        self.credentials = credentials
        self.base_url = base_url.rstrip("/")
        self.nonce = nonce if nonce is not None else ClockNonce()
        self.ordering = ordering
        self.rate_budget = rate_budget
        self.timeout = timeout
        self._client_timeout = aiohttp.ClientTimeout(total=timeout, connect=connect_timeout)
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> KrakenPayClient:
        self._ensure_session()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the session and hand over a turn the nonce source keeps (its lease)."""
        if self._session is not None:
            await self._session.close()
            self._session = None
        release = getattr(self.nonce, "aclose", None)
        if release is not None:
            with suppress(RedisError):
                await release()

    async def cancel_request(self, external_id: Any) -> Any:
        """Cancel the payment request ``external_id`` (normalised first); return Kraken's result.

        Kraken's answers about the request itself (unknown, already cancelled, not
        cancellable) raise :class:`kraken.pay.errors.PayRequestError` with a ``reason``.
        """
        eid = normalize_external_id(external_id)
        return await self._call(CANCEL_REQUEST_PATH, {"external_id": eid})

    async def private(self, path: str, payload: dict[str, Any] | None = None) -> Any:
        """Send one signed POST with a JSON body to a private ``path``; return ``result``."""
        return await self._call(path, _checked_payload(payload))

    async def _call(self, path: str, payload: dict[str, Any]) -> Any:
        """``payload`` is already checked: JSON, and without a ``nonce`` of its own."""
        try:
            return await self._send(path, payload)
        except InvalidNonce:
            if self.ordering != "window":
                log.warning(
                    "invalid nonce in serial mode on %s: another client shares the key?", path
                )
                raise
            log.info("invalid nonce on %s in window mode; re-signing once", path)
            return await self._send(path, payload)

    async def _send(self, path: str, payload: dict[str, Any]) -> Any:
        try:
            if self.rate_budget is not None:  # wait for budget before taking the lock
                await self.rate_budget.acquire()
            if self.ordering == "serial":
                return await self._send_in_turn(path, payload)
            return await self._post(path, payload, await self.nonce.next())
        except RedisError as exc:  # nothing was sent: the nonce or lock store is unreachable
            raise TransportError(f"nonce store unavailable: {type(exc).__name__}") from exc

    async def _send_in_turn(self, path: str, payload: dict[str, Any]) -> Any:
        """Draw and send inside the key's turn; after a timeout keep the turn a grace period."""
        hold = self.timeout + self.late_landing_grace + _LOCK_MARGIN
        async with self.nonce.ordering_lock(hold) as ticket:
            nonce = await (ticket.nonce() if ticket is not None else self.nonce.next())
            try:
                return await self._post(path, payload, nonce)
            except TransportError as exc:
                late = exc.ambiguous and isinstance(exc.__cause__, asyncio.TimeoutError)
                if late and self.late_landing_grace:
                    if ticket is not None:
                        ticket.hold(self.late_landing_grace)
                    else:  # a plain lock: keep it by waiting inside it
                        await asyncio.sleep(self.late_landing_grace)
                raise

    async def _post(self, path: str, payload: dict[str, Any], nonce: int) -> Any:
        body = _body(nonce, payload)
        headers = {
            "API-Key": self.credentials.api_key,
            "API-Sign": self.credentials.sign(path, nonce, body),
            "Content-Type": "application/json",
        }
        session = self._ensure_session()
        try:
            async with session.post(self.base_url + path, data=body, headers=headers) as resp:
                raw = await self._read(resp)
                return parse_response(
                    resp.status, raw, resp.headers, max_retry_after=self.max_retry_after
                )
        except RateLimited as exc:
            if self.rate_budget is not None:  # Kraken disagrees with our budget: all slow down
                with suppress(RedisError):
                    await self.rate_budget.penalize(exc.retry_after)
            raise
        except KrakenError:
            raise
        except aiohttp.ConnectionTimeoutError as exc:  # never connected: nothing was sent
            raise TransportError(f"cannot connect to {self.base_url}: timed out") from exc
        except asyncio.TimeoutError as exc:
            raise TransportError(
                f"no answer within {self.timeout:g}s from {path}", ambiguous=True
            ) from exc
        except aiohttp.ClientConnectorError as exc:  # never connected: nothing was sent
            raise TransportError(f"cannot connect to {self.base_url}: {exc.os_error}") from exc
        except aiohttp.ClientError as exc:  # reset or disconnect after the request went out
            raise TransportError(
                f"connection lost during {path}: {type(exc).__name__}", ambiguous=True
            ) from exc

    async def _read(self, resp: aiohttp.ClientResponse) -> bytes:
        """The body, up to ``max_response_bytes``; a larger one is dropped unread.

        Kraken answered, so it may have acted on the call: the error is ambiguous.
        """
        limit = self.max_response_bytes
        length = resp.content_length
        if length is not None and length > limit:
            raise _too_large(resp, limit, f"{length:,} bytes announced")
        headers = resp.headers
        if length is not None and not (
            "Content-Encoding" in headers or "Transfer-Encoding" in headers
        ):
            return await resp.read()  # exactly `length` bytes, none decoded to more
        chunks: list[bytes] = []
        size = 0
        async for chunk in resp.content.iter_any():  # decoded bytes: a gzip bomb counts too
            size += len(chunk)
            if size > limit:
                raise _too_large(resp, limit, "more")
            chunks.append(chunk)
        return b"".join(chunks)

    def _ensure_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=self._max_connections, ttl_dns_cache=300)
            self._session = aiohttp.ClientSession(
                connector=connector, timeout=self._client_timeout, raise_for_status=False
            )
        return self._session

    def __repr__(self) -> str:
        return (
            f"KrakenPayClient(base_url={self.base_url!r}, ordering={self.ordering!r}, "
            f"nonce={self.nonce!r})"
        )


def _checked_payload(payload: Any) -> dict[str, Any]:
    """The payload as a dict of JSON values, refused before anything is drawn or sent."""
    if payload is None:
        return {}
    if not isinstance(payload, Mapping):
        raise InvalidRequest(f"payload: must be a mapping, not {type(payload).__name__}")
    if "nonce" in payload:  # it would replace the nonce that the signature covers
        raise InvalidRequest("payload: 'nonce' is the client's own, signed field; remove it")
    try:
        _JSON.encode(payload)
    except (TypeError, ValueError) as exc:
        raise InvalidRequest(f"payload: must be JSON without NaN or infinity ({exc})") from None
    return dict(payload)


def _body(nonce: int, payload: dict[str, Any]) -> bytes:
    """The exact bytes sent and signed: the nonce first, then the caller's fields."""
    return _JSON.encode({"nonce": str(nonce), **payload}).encode()


def _too_large(resp: aiohttp.ClientResponse, limit: int, seen: str) -> MalformedResponse:
    resp.close()  # the rest is never read: the connection is not reused
    return MalformedResponse(
        f"HTTP {resp.status}: answer larger than max_response_bytes={limit:,} ({seen})",
        status=resp.status,
        ambiguous=True,
    )
