"""Keys made in the test, tokens signed with them, and a real JWKS server that counts fetches."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jwt
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

JWKS_PATH = "/.well-known/pay-callback-keys.json"


@dataclass
class Key:
    """An ES256 key pair with its ``kid``; ``jwk()`` is its public half as a JWKS entry."""

    kid: str
    private: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )

    def jwk(self) -> dict[str, Any]:
        public = ECAlgorithm.to_jwk(self.private.public_key(), as_dict=True)
        return {**public, "kid": self.kid, "alg": "ES256", "use": "sig"}

    def sign(self, claims: dict[str, Any], **headers: Any) -> str:
        """A JWS over the claims as given (PyJWT's jwt.encode would refuse the odd ones)."""
        payload = json.dumps(claims).encode()
        return jwt.api_jws.encode(
            payload, self.private, algorithm="ES256", headers={"kid": self.kid, **headers}
        )


def claims(
    external_id: str = "GSoAAAAAAAA",
    status: str = "success",
    kraktag: str | None = "bob",
    *,
    exp: float | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """Claims shaped as the guide's example, expiring in 24 hours unless told."""
    return {
        "iss": "kraken-pay",
        "aud": None,
        "exp": int(time.time() + 86_400) if exp is None else exp,
        "payload": {"external_id": external_id, "status": status, "customer_kraktag": kraktag},
        **extra,
    }


def jwks(*keys: Key) -> dict[str, Any]:
    return {"keys": [key.jwk() for key in keys]}


class JwksServer:
    """An aiohttp server on its own loop in a thread, serving ``self.body`` at the JWKS path.

    ``hits`` counts requests; ``delay`` holds each answer that long (for timeouts); ``status``
    and ``body`` can be changed between requests to rotate keys or break the answer.
    """

    def __init__(self, *keys: Key) -> None:
        self.body: bytes = json.dumps(jwks(*keys)).encode()
        self.status = 200
        self.delay = 0.0
        self.hits = 0
        self.url = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._serve()), daemon=True)

    def serve(self, *keys: Key) -> None:
        self.body = json.dumps(jwks(*keys)).encode()

    async def _handle(self, request: web.Request) -> web.Response:
        self.hits += 1
        if self.delay:
            await asyncio.sleep(self.delay)  # the server being slow is what is under test
        return web.Response(body=self.body, status=self.status, content_type="application/json")

    async def _serve(self) -> None:
        app = web.Application()
        app.router.add_get(JWKS_PATH, self._handle)
        runner = web.AppRunner(app, shutdown_timeout=0.1)  # a held answer is cut, not awaited
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}{JWKS_PATH}"
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        self._ready.set()
        await self._stop.wait()
        await runner.cleanup()

    def __enter__(self) -> JwksServer:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the JWKS server did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``predicate`` until it holds or ``timeout`` seconds pass (then fail, naming it)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)


async def await_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.01)
