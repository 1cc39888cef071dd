"""Late landings: nonce rejections under the simulator's ``delay`` fault, by late_landing_grace.

Run: ``.venv/bin/python bench/late.py [--calls 200] [--graces 0,3]``.

Serial mode, ``RedisNonce``, 4 callers in one process, a client timeout of ``--timeout`` s;
the simulator holds a share (``--rate``) of calls ``--delay`` s and then applies them, as a
slow network would deliver them after the client gave up. Each grace runs on a fresh
simulator in the same run; the table shows how many delayed calls were rejected for their
nonce (each would count towards Kraken's lockout). Aim: 0 with the default grace.
"""

from __future__ import annotations

import argparse
import asyncio
import uuid

import redis.asyncio as aioredis
from _support import print_table, redis_url, sim_call, simulator_process

from kraken.pay import Credentials, KrakenPayClient, RedisNonce, normalize_external_id
from kraken.pay.errors import TransportError
from kraken.pay.simulator import DEMO_API_KEY, DEMO_API_SECRET
from kraken_pay_cli.local import redis_server

LANES = 4


async def _calls(url: str, rurl: str, ids: list[str], timeout: float, grace: float) -> int:
    """Cancel every id, LANES at a time; return how many calls timed out."""
    redis = aioredis.Redis.from_url(rurl)
    creds = Credentials(DEMO_API_KEY, DEMO_API_SECRET)
    nonce = RedisNonce(redis, creds.key_id)
    timed_out = 0
    queue = iter(ids)
    async with KrakenPayClient(
        creds, base_url=url, nonce=nonce, timeout=timeout, late_landing_grace=grace
    ) as client:

        async def lane() -> None:
            nonlocal timed_out
            for eid in queue:
                try:
                    await client.cancel_request(eid)
                except TransportError:
                    timed_out += 1

        await asyncio.gather(*(lane() for _ in range(LANES)))
    await redis.aclose()
    return timed_out


async def _settled(url: str, calls: int, wait: float) -> dict:
    """The simulator's counts once every call was applied or refused (late ones included)."""

    async def poll() -> dict:
        while True:
            stats = sim_call(url, "/_sim/stats")
            if stats["cancels_applied"] + stats["nonce_rejections"] >= calls:
                return stats
            await asyncio.sleep(0.05)

    return await asyncio.wait_for(poll(), wait)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--rate", type=float, default=0.05)
    parser.add_argument("--delay", type=float, default=0.5)
    parser.add_argument("--timeout", type=float, default=0.25)
    parser.add_argument("--graces", default="0,3", help="comma-separated seconds")
    args = parser.parse_args()

    rows = [("late_landing_grace", "calls", "timed out", "delayed", "rejected", "share rejected")]
    with redis_server(redis_url()) as rurl:
        for grace in (float(g) for g in args.graces.split(",")):
            with simulator_process("--seed", "7") as url:
                ids = [normalize_external_id(uuid.uuid4()) for _ in range(args.calls)]
                sim_call(url, "/_sim/requests", {"external_ids": ids})
                sim_call(url, "/_sim/faults", {"delay": {"rate": args.rate, "seconds": args.delay}})
                timed_out = asyncio.run(_calls(url, rurl, ids, args.timeout, grace))
                stats = asyncio.run(_settled(url, args.calls, args.delay + 10))
            delayed = stats["faults_injected"]["delay"]
            rejected = stats["nonce_rejections"]
            share = f"{rejected / delayed:.0%}" if delayed else "-"
            counts = (args.calls, timed_out, delayed, rejected)
            rows.append((f"{grace:g} s", *(str(n) for n in counts), share))
    print_table(rows)


if __name__ == "__main__":
    main()
