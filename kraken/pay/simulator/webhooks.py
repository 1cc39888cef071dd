"""The simulator's side of Kraken Pay's status notifications: keys, signed tokens, deliveries.

Like Kraken, the simulator signs each notification with an ES256 key whose public half is in its
JWKS, and POSTs the token to every registered URL. A delivery that is not answered 2xx is tried
again with exponential backoff, a bounded number of times; deliveries run as tasks of the
server's loop, so the API call that changed the state is answered at once.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import time
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from kraken.pay.simulator.faults import Fault, Faults
from kraken.pay.simulator.state import Counters

__all__ = ["CallbackKeys", "Notifier", "check_url"]

TOKEN_LIFETIME = 86_400  # seconds: Kraken's notifications live 24 hours
_MAX_BACKOFF = 5.0
_MAX_URLS = 100


class CallbackKeys:
    """An ES256 key made when the simulator is built, and a stranger for the unknown-key fault."""

    def __init__(self) -> None:
        self.kid = f"sim-{secrets.token_hex(8)}"
        self._key = ec.generate_private_key(ec.SECP256R1())
        self._stranger_kid = f"sim-unknown-{secrets.token_hex(8)}"
        self._stranger = ec.generate_private_key(ec.SECP256R1())
        public = ECAlgorithm.to_jwk(self._key.public_key(), as_dict=True)
        self._jwks = {"keys": [{**public, "kid": self.kid, "alg": "ES256", "use": "sig"}]}

    def jwks(self) -> dict[str, Any]:
        """The JWKS served at ``/.well-known/pay-callback-keys.json`` (public keys only)."""
        return json.loads(json.dumps(self._jwks))

    def token(
        self, external_id: str, status: str, kraktag: str | None, fault: str | None = None
    ) -> str:
        """A notification as Kraken signs it, or spoiled as the webhook ``fault`` says."""
        now = int(time.time())
        expired = fault == "webhook_expired"
        claims = {
            "iss": "kraken-pay",
            "aud": None,
            "exp": now - 3600 if expired else now + TOKEN_LIFETIME,
            "payload": {
                "external_id": external_id,
                "status": status,
                "customer_kraktag": kraktag,
            },
        }
        stranger = fault == "webhook_unknown_key"
        key, kid = (self._stranger, self._stranger_kid) if stranger else (self._key, self.kid)
        token = jwt.encode(claims, key, algorithm="ES256", headers={"kid": kid})
        return _spoil_signature(token) if fault == "webhook_bad_signature" else token


def _spoil_signature(token: str) -> str:
    """The same token with one bit of its signature flipped: well-formed, and wrong."""
    signing_input, _, signature = token.rpartition(".")
    raw = bytearray(base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)))
    raw[len(raw) // 2] ^= 0x01
    spoiled = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
    return f"{signing_input}.{spoiled}"


def check_url(url: Any) -> str:
    """The URL if it is an absolute http(s) URL, else ``ValueError`` naming the field."""
    parts = urlsplit(url) if isinstance(url, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"url: must be an absolute http(s) URL, got {url!r}")
    return url


class Notifier:
    """Registered URLs, and one delivery task per notification and URL."""

    def __init__(
        self,
        keys: CallbackKeys,
        faults: Faults,
        counters: Counters,
        *,
        attempts: int = 5,
        backoff: float = 0.2,
        timeout: float = 5.0,
    ) -> None:
        if attempts < 1:
            raise ValueError(f"webhook_attempts: must be >= 1, got {attempts}")
        if not backoff >= 0:
            raise ValueError(f"webhook_backoff: must be >= 0, got {backoff}")
        self.keys = keys
        self._faults = faults
        self._counters = counters
        self._attempts = attempts
        self._backoff = backoff
        self._timeout = timeout
        self._urls: list[str] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None

    @property
    def urls(self) -> list[str]:
        return list(self._urls)

    def register(self, url: str) -> list[str]:
        check_url(url)
        if url not in self._urls:
            if len(self._urls) >= _MAX_URLS:
                raise ValueError(f"url: at most {_MAX_URLS} URLs can be registered")
            self._urls.append(url)
        return self.urls

    def clear(self) -> None:
        """Forget the URLs and abandon deliveries in flight (``reset``)."""
        self._urls.clear()
        for task in list(self._tasks):
            task.cancel()

    async def start(self) -> None:
        timeout = aiohttp.ClientTimeout(total=self._timeout)
        self._session = aiohttp.ClientSession(timeout=timeout)

    async def stop(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def drain(self) -> None:
        """Return once no delivery is in flight (each ends acknowledged or given up)."""
        while self._tasks:
            await asyncio.wait(set(self._tasks))

    def notify(self, external_id: str, status: str, kraktag: str | None) -> None:
        """Announce one state change to every URL; schedules, never waits."""
        if not self._urls or self._session is None:
            return
        fault = self._faults.draw()
        if fault is not None:
            injected = self._counters.webhook_faults_injected
            injected[fault.kind] = injected.get(fault.kind, 0) + 1
        token = self.keys.token(external_id, status, kraktag, fault.kind if fault else None)
        copies = 2 if fault is not None and fault.kind == "webhook_duplicate" else 1
        delay = _delay(fault)
        for url in self._urls:
            self._counters.webhooks_notified += 1
            for _ in range(copies):
                task = asyncio.get_running_loop().create_task(self._deliver(url, token, delay))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _deliver(self, url: str, token: str, delay: float) -> None:
        if delay:
            await asyncio.sleep(delay)
        for attempt in range(self._attempts):
            if attempt:
                self._counters.webhooks_retried += 1
                await asyncio.sleep(min(self._backoff * 2 ** (attempt - 1), _MAX_BACKOFF))
            if await self._post(url, token):
                self._counters.webhooks_acknowledged += 1
                return
        self._counters.webhooks_failed += 1

    async def _post(self, url: str, token: str) -> bool:
        session = self._session
        if session is None:
            return False
        self._counters.webhooks_sent += 1
        headers = {"Content-Type": "application/jwt"}
        try:
            async with session.post(url, data=token, headers=headers) as response:
                await response.read()
                return 200 <= response.status < 300
        except (aiohttp.ClientError, asyncio.TimeoutError):
            return False


def _delay(fault: Fault | None) -> float:
    return fault.seconds if fault is not None and fault.kind == "webhook_delay" else 0.0
