"""Cancels per second of KrakenPayClient against the simulator, beside two baselines.

Run: ``.venv/bin/python bench/client.py [--rounds 3]`` (or ``make bench``). All sides hit the
same simulator process in the same run at the same concurrency, in alternating rounds (the
median of each is shown):

- ``plain``: unsigned aiohttp POSTs of the same JSON body (no nonce, no turn, no signature);
- ``clock``: ``KrakenPayClient`` with ``ClockNonce``, one process: the ceiling of a serial client;
- ``redis``: ``KrakenPayClient`` with ``RedisNonce``, the mode that orders nonces across workers.

Rows: serial with 1 in flight, window with 32 in flight, and serial with 1 in flight against a
simulator that holds each answer ``--latency`` ms, as the real Kraken's round trip does. The
simulator refuses an unsigned POST at its first check, so the baseline costs the server less
than a cancel: the difference, measured in this process on the simulator's own code, is printed.
Aims: serial redis >= 0.85x clock (and >= 0.65x plain); window redis >= 0.85x plain; with
latency, serial redis >= 0.95x plain.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
import uuid

import aiohttp
import redis.asyncio as aioredis
from _support import Stopwatch, print_table, rate, redis_url, sim_call, simulator_process

from kraken.pay import ClockNonce, Credentials, KrakenPayClient, RedisNonce, normalize_external_id
from kraken.pay.client import CANCEL_REQUEST_PATH
from kraken.pay.simulator import DEMO_API_KEY, DEMO_API_SECRET
from kraken.pay.simulator.pay import KrakenPay
from kraken.pay.simulator.state import Counters
from kraken_pay_cli.local import redis_server

NONCE_WINDOW_NS = 60 * 10**9  # window mode is for keys with a nonce window set at Kraken
SIDES = ("plain", "clock", "redis")


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


async def _signed(url: str, rurl: str, ids: list[str], in_flight: int, mode: str, side: str):
    redis = aioredis.Redis.from_url(rurl)
    creds = Credentials(DEMO_API_KEY, DEMO_API_SECRET)
    nonce = RedisNonce(redis, creds.key_id) if side == "redis" else ClockNonce()
    async with KrakenPayClient(creds, base_url=url, nonce=nonce, ordering=mode) as client:

        async def cancel(i: int) -> None:
            await client.cancel_request(ids[i])

        seconds = await _run_concurrently(len(ids), in_flight, cancel)
    await redis.aclose()
    return seconds


def _fresh(count: int) -> list[str]:
    return [normalize_external_id(uuid.uuid4()) for _ in range(count)]


async def _one(url: str, rurl: str, side: str, count: int, in_flight: int, mode: str) -> float:
    """Calls per second of one side; every signed cancel must be applied, none rejected."""
    ids = _fresh(count)
    if side == "plain":
        return rate(count, await _plain(url, ids, in_flight))
    sim_call(url, "/_sim/requests", {"external_ids": ids})
    before = sim_call(url, "/_sim/stats")
    seconds = await _signed(url, rurl, ids, in_flight, mode, side)
    after = sim_call(url, "/_sim/stats")
    applied = after["cancels_applied"] - before["cancels_applied"]
    rejected = after["nonce_rejections"] - before["nonce_rejections"]
    if applied != count or (mode == "serial" and rejected):
        raise SystemExit(f"{side}: {applied}/{count} applied, {rejected} nonce rejections")
    return rate(count, seconds)


def measure(url: str, rurl: str, count: int, in_flight: int, mode: str, rounds: int) -> dict:
    """The median rate of each side over alternating rounds, after a warm-up of each."""
    for side in SIDES:
        asyncio.run(_one(url, rurl, side, min(count, 50), in_flight, mode))
    rates: dict[str, list[float]] = {side: [] for side in SIDES}
    for _ in range(rounds):
        for side in SIDES:
            rates[side].append(asyncio.run(_one(url, rurl, side, count, in_flight, mode)))
    return {side: statistics.median(values) for side, values in rates.items()}


def server_work_us(calls: int = 5000) -> tuple[float, float]:
    """µs the simulator spends on an unsigned POST (refused at once) and on a real cancel."""
    creds = Credentials(DEMO_API_KEY, DEMO_API_SECRET)
    kraken = KrakenPay({DEMO_API_KEY: DEMO_API_SECRET}, Counters())
    ids = _fresh(calls)
    kraken.requests.create(ids, "pending")
    unsigned = [
        json.dumps({"nonce": "1", "external_id": eid}, separators=(",", ":")).encode()
        for eid in ids
    ]
    signed = []
    for n, eid in enumerate(ids, start=1):
        body = json.dumps({"nonce": str(n), "external_id": eid}, separators=(",", ":")).encode()
        signed.append((creds.sign(CANCEL_REQUEST_PATH, n, body), body))
    start = time.perf_counter()
    for body in unsigned:
        kraken.call(CANCEL_REQUEST_PATH, None, None, body)
    middle = time.perf_counter()
    for sign, body in signed:
        kraken.call(CANCEL_REQUEST_PATH, DEMO_API_KEY, sign, body)
    end = time.perf_counter()
    if kraken.counters.cancels_applied != calls:
        raise SystemExit("server_work_us: the signed cancels were not all applied")
    return (middle - start) / calls * 1e6, (end - middle) / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serial-count", type=int, default=2000)
    parser.add_argument("--window-count", type=int, default=5000)
    parser.add_argument("--latency", type=float, default=30.0, help="ms held per answer")
    parser.add_argument("--latency-count", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    plan = [  # label, simulator options, mode, in flight, count, aims
        ("serial", (), "serial", 1, args.serial_count, "redis>=0.85x clock, >=0.65x plain"),
        ("window", ("--nonce-window", str(NONCE_WINDOW_NS)), "window", 32, args.window_count,
         "redis>=0.85x plain"),
        (f"serial, {args.latency:g} ms", ("--latency", f"{args.latency:g}"), "serial", 1,
         args.latency_count, "redis>=0.95x plain"),
    ]  # fmt: skip
    rows = [("row", "in flight", "plain/s", "clock/s", "redis/s", "redis/clock", "redis/plain")]
    aims = []
    with redis_server(redis_url()) as rurl:
        for label, sim_args, mode, in_flight, count, aim in plan:
            with simulator_process(*sim_args) as url:
                r = measure(url, rurl, count, in_flight, mode, args.rounds)
            rows.append(
                (
                    label,
                    str(in_flight),
                    *(f"{r[side]:,.0f}" for side in SIDES),
                    f"{r['redis'] / r['clock']:.2f}",
                    f"{r['redis'] / r['plain']:.2f}",
                )
            )
            aims.append(f"{label}: {aim}")
    print_table(rows)
    print("aims: " + "; ".join(aims))
    unsigned, cancel = server_work_us()
    print(
        f"simulator work per call: unsigned POST {unsigned:.1f} µs, signed cancel {cancel:.1f} µs "
        f"(the baseline is {cancel - unsigned:.1f} µs cheaper on the server)"
    )
    print("nonce rejections in serial rows: 0 (checked after every round)")


if __name__ == "__main__":
    main()
