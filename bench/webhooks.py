"""Kraken Pay notifications: verification and receiving, each beside a baseline of the same run.

Run: ``.venv/bin/python bench/webhooks.py``. Three measurements, all on loopback:

- verify: ``PayCallbackVerifier.verify`` against a plain ``jwt.decode`` with the key in hand
  (the ES256 check itself), so the ratio is what header rules, the key cache and the claim
  checks cost. Aim: >= 0.8.
- receive: notifications per second through ``aiohttp_handler`` against a hand-written aiohttp
  handler that reads the body, runs the same plain ``jwt.decode`` and answers 200; same client,
  same concurrency, so the ratio is what the receiver adds (bounded read, rules, hook). Aim: >= 0.8.
- flood: tokens with made-up ``kid``s, as fast as they come, against a real JWKS server: the
  JWKS fetches stay at one per ``min_refetch_interval``, whatever the rate of forgeries.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

import aiohttp
import jwt
from _support import Stopwatch, print_table, rate
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from kraken.pay.webhooks import InvalidCallback, PayCallbackVerifier, aiohttp_handler

JWKS_PATH = "/.well-known/pay-callback-keys.json"


def _key(kid: str) -> tuple[ec.EllipticCurvePrivateKey, dict[str, Any]]:
    private = ec.generate_private_key(ec.SECP256R1())
    public = ECAlgorithm.to_jwk(private.public_key(), as_dict=True)
    return private, {**public, "kid": kid, "alg": "ES256", "use": "sig"}


def _token(private: ec.EllipticCurvePrivateKey, kid: str, n: int) -> str:
    claims = {
        "iss": "kraken-pay",
        "aud": None,
        "exp": int(time.time()) + 86_400,
        "payload": {"external_id": f"id{n}", "status": "success", "customer_kraktag": "bob"},
    }
    return jwt.encode(claims, private, algorithm="ES256", headers={"kid": kid})


async def _serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


def bench_verify(count: int) -> tuple[float, float]:
    private, jwk = _key("k1")
    tokens = [_token(private, "k1", n) for n in range(count)]
    public = private.public_key()
    verifier = PayCallbackVerifier("http://127.0.0.1:9" + JWKS_PATH, jwks={"keys": [jwk]})
    with Stopwatch() as plain:
        for token in tokens:
            jwt.decode(token, public, algorithms=["ES256"], options={"verify_aud": False})
    with Stopwatch() as ours:
        for token in tokens:
            verifier.verify(token)
    return rate(count, plain.seconds), rate(count, ours.seconds)


def best_of(rounds: int, measure: Any) -> tuple[float, float]:
    """The best rate of each side over ``rounds`` alternating runs: the least disturbed one."""
    results = [measure() for _ in range(rounds)]
    return max(r[0] for r in results), max(r[1] for r in results)


async def _post_all(url: str, tokens: list[str], in_flight: int) -> float:
    queue = iter(tokens)
    async with aiohttp.ClientSession() as session:

        async def lane() -> None:
            for token in queue:
                async with session.post(url, data=token) as response:
                    await response.read()
                    if response.status != 200:
                        raise RuntimeError(f"HTTP {response.status}")

        with Stopwatch() as watch:
            await asyncio.gather(*(lane() for _ in range(in_flight)))
    return watch.seconds


async def bench_receive(count: int, in_flight: int) -> tuple[float, float]:
    private, jwk = _key("k1")
    tokens = [_token(private, "k1", n) for n in range(count)]
    verifier = PayCallbackVerifier("http://127.0.0.1:9" + JWKS_PATH, jwks={"keys": [jwk]})
    seen: set[str] = set()

    public = private.public_key()

    async def bare(request: web.Request) -> web.Response:
        token = await request.read()
        jwt.decode(token, public, algorithms=["ES256"], options={"verify_aud": False})
        return web.json_response({"code": "Success"})

    app = web.Application()
    app.router.add_post("/bare", bare)
    app.router.add_post("/hook", aiohttp_handler(verifier, lambda c: seen.add(c.notification_id)))
    runner, base = await _serve(app)
    try:
        plain = await _post_all(base + "/bare", tokens, in_flight)
        ours = await _post_all(base + "/hook", tokens, in_flight)
    finally:
        await runner.cleanup()
    assert len(seen) == count
    return rate(count, plain), rate(count, ours)


async def bench_flood(seconds: float, interval: float) -> tuple[int, int, float]:
    _, jwk = _key("k1")
    fetches = 0

    async def jwks(request: web.Request) -> web.Response:
        nonlocal fetches
        fetches += 1
        return web.json_response({"keys": [jwk]})

    app = web.Application()
    app.router.add_get(JWKS_PATH, jwks)
    runner, base = await _serve(app)
    verifier = PayCallbackVerifier(base + JWKS_PATH, min_refetch_interval=interval)
    forgers = [ec.generate_private_key(ec.SECP256R1()) for _ in range(4)]
    refused = 0
    try:
        deadline = time.monotonic() + seconds
        with Stopwatch() as watch:
            while time.monotonic() < deadline:
                token = _token(forgers[refused % 4], f"forged-{refused}", refused)
                try:
                    await verifier.averify(token)
                except InvalidCallback:
                    refused += 1
    finally:
        await runner.cleanup()
    return refused, fetches, watch.seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=3000, help="tokens per measurement")
    parser.add_argument("--in-flight", type=int, default=16, help="concurrent POSTs")
    parser.add_argument("--flood-seconds", type=float, default=5.0)
    parser.add_argument("--interval", type=float, default=1.0, help="min_refetch_interval")
    parser.add_argument("--rounds", type=int, default=3, help="runs per side; the best counts")
    args = parser.parse_args()

    plain_v, ours_v = best_of(args.rounds, lambda: bench_verify(args.count))
    plain_r, ours_r = best_of(
        args.rounds, lambda: asyncio.run(bench_receive(args.count, args.in_flight))
    )
    refused, fetches, seconds = asyncio.run(bench_flood(args.flood_seconds, args.interval))
    ceiling = int(seconds / args.interval) + 1
    print_table(
        [
            ("measure", "baseline/s", "ours/s", "ratio"),
            ("verify", f"{plain_v:.0f}", f"{ours_v:.0f}", f"{ours_v / plain_v:.2f}"),
            ("receive", f"{plain_r:.0f}", f"{ours_r:.0f}", f"{ours_r / plain_r:.2f}"),
        ]
    )
    print(
        f"\nflood: {refused} forged kids refused in {seconds:.1f}s ({refused / seconds:.0f}/s), "
        f"{fetches} JWKS fetches (ceiling {ceiling} at one per {args.interval:g}s)"
    )
    print(json.dumps({"verify": ours_v / plain_v, "receive": ours_r / plain_r, "fetches": fetches}))
    return 0 if fetches <= ceiling else 1


if __name__ == "__main__":
    sys.exit(main())
