"""Processes sharing one API key in serial mode: Redis commands per cancel, rejections, rate.

Run: ``.venv/bin/python bench/sharing.py [--processes 8] [--count 2000] [--parser hiredis]``.

In one run, against one strict simulator (no nonce window): one process makes ``--count``
serial cancels with ``RedisNonce``, one in flight (the baseline); then ``--processes``
processes make ``--count`` between them, started at one barrier (the aggregate rate is all
cancels over the span from the first start to the last end); then the same again while a
``MONITOR`` connection counts every command the clients send (commands that scripts run
inside Redis are left out). Aims: at most 3 commands per cancel, 0 nonce rejections, an
aggregate rate >= 0.6x the one process's rate.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import multiprocessing
import threading
import time
import uuid

import redis
import redis.asyncio as aioredis
from _support import print_table, redis_url, sim_call, simulator_process

from kraken.pay import Credentials, KrakenPayClient, RedisNonce, normalize_external_id
from kraken.pay.simulator import DEMO_API_KEY, DEMO_API_SECRET
from kraken_pay_cli.local import redis_server

WARM_UP = 5
_STOP = "bench-sharing-monitor-stop"


def parser_class(name: str):
    """redis-py's asyncio reply parser by name: ``hiredis`` (C) or ``python`` (pure RESP2)."""
    from redis._parsers import _AsyncHiredisParser, _AsyncRESP2Parser

    return {"hiredis": _AsyncHiredisParser, "python": _AsyncRESP2Parser}[name]


def _worker(url: str, rurl: str, opts: dict, ids: list[str], ready, start) -> tuple[float, float]:
    """Warm up, wait at the barrier, cancel ``ids`` one at a time; return (start, end) times."""

    async def main() -> tuple[float, float]:
        client_redis = aioredis.Redis.from_url(rurl, parser_class=parser_class(opts["parser"]))
        creds = Credentials(DEMO_API_KEY, DEMO_API_SECRET)
        nonce = RedisNonce(client_redis, creds.key_id, quantum=opts["quantum"])
        async with KrakenPayClient(creds, base_url=url, nonce=nonce) as client:
            for eid in ids[:WARM_UP]:
                await client.cancel_request(eid)
            await nonce.aclose()  # hand the warm-up's lease over before the barrier
            ready.put(1)
            await asyncio.to_thread(start.wait, 60)
            began = time.time()
            for eid in ids[WARM_UP:]:
                await client.cancel_request(eid)
            ended = time.time()
        await client_redis.aclose()
        return began, ended

    return asyncio.run(main())


class CommandCounter:
    """Counts the commands clients send, by name, through ``MONITOR`` on its own connection."""

    def __init__(self, rurl: str) -> None:
        self._rurl = rurl
        self.counts: collections.Counter[str] = collections.Counter()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> CommandCounter:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("MONITOR did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        redis.Redis.from_url(self._rurl).echo(_STOP)
        self._thread.join(30)

    def _run(self) -> None:
        with redis.Redis.from_url(self._rurl).monitor() as monitor:
            self._ready.set()
            for entry in monitor.listen():
                if _STOP in entry["command"]:
                    return
                if entry["client_type"] != "lua":
                    self.counts[entry["command"].split(" ", 1)[0].upper()] += 1


def run_processes(url: str, rurl: str, opts: dict, ids: list[str], processes: int, monitor: bool):
    """Aggregate cancels/s of ``processes`` workers over ``ids``; the command counts if asked."""
    ctx = multiprocessing.get_context("spawn")
    manager = ctx.Manager()
    ready, start = manager.Queue(), manager.Event()
    chunks = [ids[i::processes] for i in range(processes)]
    counts: collections.Counter[str] = collections.Counter()
    with ctx.Pool(processes) as pool:
        jobs = [
            pool.apply_async(_worker, (url, rurl, opts, chunk, ready, start)) for chunk in chunks
        ]
        for _ in chunks:
            ready.get(timeout=120)
        if monitor:
            with CommandCounter(rurl) as counter:
                start.set()
                spans = [job.get(timeout=600) for job in jobs]
            counts = counter.counts
        else:
            start.set()
            spans = [job.get(timeout=600) for job in jobs]
    manager.shutdown()
    measured = len(ids) - WARM_UP * processes
    seconds = max(end for _, end in spans) - min(began for began, _ in spans)
    return measured / seconds, counts, measured


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=8)
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--parser", choices=("hiredis", "python"), default="hiredis")
    parser.add_argument("--quantum", type=float, default=0.01, help="RedisNonce(quantum=)")
    args = parser.parse_args()
    opts = {"parser": args.parser, "quantum": args.quantum}

    def fresh(n: int) -> list[str]:
        return [normalize_external_id(uuid.uuid4()) for _ in range(n)]

    with redis_server(redis_url()) as rurl, simulator_process() as url:
        total = args.count + WARM_UP * args.processes
        batches = [fresh(args.count + WARM_UP), fresh(total), fresh(total)]
        for ids in batches:
            sim_call(url, "/_sim/requests", {"external_ids": ids})
        one, _, _ = run_processes(url, rurl, opts, batches[0], 1, monitor=False)
        shared, _, _ = run_processes(url, rurl, opts, batches[1], args.processes, False)
        _, counts, measured = run_processes(
            url, rurl, opts, batches[2], args.processes, monitor=True
        )
        stats = sim_call(url, "/_sim/stats")

    applied = stats["cancels_applied"]
    expected = sum(len(ids) for ids in batches)
    print_table(
        [
            ("processes", "cancels/s", "ratio to 1 process"),
            ("1", f"{one:,.0f}", "1.00"),
            (str(args.processes), f"{shared:,.0f}", f"{shared / one:.2f}"),
        ]
    )
    sent = sum(counts.values())
    by_name = ", ".join(f"{name} {n / measured:.2f}" for name, n in counts.most_common())
    print(f"redis commands sent per cancel ({args.processes} processes): {sent / measured:.2f}")
    print(f"  by command: {by_name}")
    print(f"nonce rejections: {stats['nonce_rejections']}; cancels applied {applied}/{expected}")
    print(f"parser: {args.parser}; quantum: {args.quantum:g} s")
    print("aims: <= 3 commands per cancel, 0 rejections, ratio >= 0.6")


if __name__ == "__main__":
    main()
