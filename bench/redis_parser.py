"""redis-py's asyncio parsers and connection settings on the turn's own round trips.

Run: ``.venv/bin/python bench/redis_parser.py [--n 5000] [--rounds 5]``.

One process takes and releases one key's turn ``--n`` times (two script calls each, the
uncontended serial path), and draws ``--n`` nonce blocks (window mode), with each variant in
alternating rounds against the same Redis; the table shows the median µs per round trip and
each variant's ratio to the default (``Redis.from_url(url)`` with hiredis installed):

- ``python``: the pure-Python RESP2 parser instead of hiredis;
- ``resp3``: hiredis with ``protocol=3``;
- ``keepalive``: hiredis with TCP keepalive and a health check every 30 s, as a long-lived
  worker might set them.

This is what chose hiredis (``redis[hiredis]`` in pyproject.toml) and the default connection
settings (``tasks/runtime.py`` builds its client with ``Redis.from_url(url)``).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

import redis.asyncio as aioredis
from _support import print_table, redis_url
from sharing import parser_class

from kraken.pay import RedisNonce
from kraken_pay_cli.local import redis_server

VARIANTS: dict[str, dict] = {
    "default": {"parser_class": parser_class("hiredis")},
    "python": {"parser_class": parser_class("python")},
    "resp3": {"parser_class": parser_class("hiredis"), "protocol": 3},
    "keepalive": {
        "parser_class": parser_class("hiredis"),
        "socket_keepalive": True,
        "health_check_interval": 30,
    },
}


async def _round(rurl: str, variant: str, n: int) -> tuple[float, float]:
    """µs per script round trip: take+release of the turn, and one nonce draw."""
    redis = aioredis.Redis.from_url(rurl, **VARIANTS[variant])
    source = RedisNonce(redis, f"parser-{variant}", lease=0.0, quantum=0.0)
    turn = source._turn
    await source.draw(1)  # load the scripts, open the connection
    start = time.perf_counter()
    for _ in range(n):
        await turn._take(5.0)
        await turn._drop()
    middle = time.perf_counter()
    for _ in range(n):
        await source.draw(8)
    end = time.perf_counter()
    await source.aclose()
    await redis.aclose()
    return (middle - start) / (2 * n) * 1e6, (end - middle) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in VARIANTS}
    with redis_server(redis_url()) as rurl:
        for _ in range(args.rounds):
            for name in results:
                results[name].append(asyncio.run(_round(rurl, name, args.n)))
    medians = {
        name: tuple(statistics.median(r[i] for r in runs) for i in (0, 1))
        for name, runs in results.items()
    }
    base = medians["default"]
    rows = [("variant", "turn µs/round trip", "x default", "draw µs/round trip", "x default")]
    for name, (turn_us, draw_us) in medians.items():
        rows.append(
            (
                name,
                f"{turn_us:.0f}",
                f"{turn_us / base[0]:.2f}",
                f"{draw_us:.0f}",
                f"{draw_us / base[1]:.2f}",
            )
        )
    print_table(rows)
    print("x default above 1.00: slower than the default per round trip")


if __name__ == "__main__":
    main()
