"""Cancels per second of KrakenPayClient against the simulator, beside plain aiohttp POSTs.

Run: ``.venv/bin/python bench/client.py`` (or ``make bench``). Both sides hit the same
simulator process in the same run at the same concurrency; the baseline sends the same JSON
body unsigned (no nonce, no lock, no signature), so the ratio is what signing, nonces from
Redis and the ordering lock cost. Aims: serial with 1 in flight >= 0.7; window with 32 in
flight >= 0.8.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import uuid
from pathlib import Path

import aiohttp
import redis.asyncio as aioredis

# bench/ holds a tasks.py of its own; take bench/ off the path while importing the package.
sys.path.remove(str(Path(__file__).resolve().parent))
from kraken.pay import Credentials, KrakenPayClient, RedisNonce, normalize_external_id
from kraken.pay.client import CANCEL_REQUEST_PATH
from kraken.pay.simulator import DEMO_API_KEY, DEMO_API_SECRET
from tasks.embedded import redis_server

sys.path.append(str(Path(__file__).resolve().parent))
from _support import Stopwatch, print_table, rate, redis_url, simulator_process

NONCE_WINDOW_NS = 60 * 10**9  # window mode is for keys with a nonce window set at Kraken


async def _run_concurrently(count: int, in_flight: int, call) -> float:
    queue = iter(range(count))

    async def lane() -> None:
        for i in queue:
            await call(i)

    with Stopwatch() as watch:
        await asyncio.gather(*(lane() for _ in range(in_flight)))
    return watch.seconds


async def _plain(url: str, ids: list[str], in_flight: int) -> float:
    async with aiohttp.ClientSession() as session:

        async def post(i: int) -> None:
            body = json.dumps({"nonce": "1", "external_id": ids[i]}, separators=(",", ":"))
            headers = {"Content-Type": "application/json"}
            async with session.post(url + CANCEL_REQUEST_PATH, data=body, headers=headers) as r:
                await r.read()

        return await _run_concurrently(len(ids), in_flight, post)


async def _client(url: str, rurl: str, ids: list[str], in_flight: int, ordering: str) -> float:
    redis = aioredis.Redis.from_url(rurl)
    creds = Credentials(DEMO_API_KEY, DEMO_API_SECRET)
    nonce = RedisNonce(redis, creds.key_id)
    async with KrakenPayClient(creds, base_url=url, nonce=nonce, ordering=ordering) as client:

        async def cancel(i: int) -> None:
            await client.cancel_request(ids[i])

        seconds = await _run_concurrently(len(ids), in_flight, cancel)
    await redis.aclose()
    return seconds


async def _create(url: str, ids: list[str]) -> None:
    async with aiohttp.ClientSession() as session:
        for start in range(0, len(ids), 5000):
            payload = {"external_ids": ids[start : start + 5000]}
            async with session.post(url + "/_sim/requests", json=payload) as resp:
                resp.raise_for_status()


async def _stats(url: str) -> dict:
    async with aiohttp.ClientSession() as session, session.get(url + "/_sim/stats") as resp:
        return await resp.json()


async def measure(url: str, rurl: str, count: int, in_flight: int, ordering: str) -> tuple:
    def fresh() -> list[str]:
        return [normalize_external_id(uuid.uuid4()) for _ in range(count)]

    warm = fresh()[:50]
    await _create(url, warm)
    await _plain(url, warm, in_flight)
    await _client(url, rurl, warm, in_flight, ordering)

    plain_ids, client_ids = fresh(), fresh()
    await _create(url, client_ids)
    before = await _stats(url)
    plain = await _plain(url, plain_ids, in_flight)
    signed = await _client(url, rurl, client_ids, in_flight, ordering)
    after = await _stats(url)
    applied = after["cancels_applied"] - before["cancels_applied"]
    if applied != count:
        raise SystemExit(f"only {applied} of {count} cancels applied: the run is not valid")
    return rate(count, plain), rate(count, signed), after["nonce_rejections"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serial-count", type=int, default=2000)
    parser.add_argument("--window-count", type=int, default=5000)
    args = parser.parse_args()

    rows = [("mode", "in flight", "plain POST/s", "client cancels/s", "ratio", "aim")]
    with (
        redis_server(redis_url()) as rurl,
        simulator_process("--nonce-window", str(NONCE_WINDOW_NS)) as url,
    ):
        for ordering, in_flight, count, aim in (
            ("serial", 1, args.serial_count, 0.7),
            ("window", 32, args.window_count, 0.8),
        ):
            plain, signed, rejections = asyncio.run(measure(url, rurl, count, in_flight, ordering))
            rows.append(
                (
                    ordering,
                    str(in_flight),
                    f"{plain:,.0f}",
                    f"{signed:,.0f}",
                    f"{signed / plain:.2f}",
                    f">= {aim}",
                )
            )
    print_table(rows)
    print(f"nonce rejections: {rejections}")


if __name__ == "__main__":
    main()
