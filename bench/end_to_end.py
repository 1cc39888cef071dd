"""End-to-end throughput of cancel_request beside a no-op Celery task, same broker and workers.

Run: ``.venv/bin/python bench/end_to_end.py [--n 2000] [--nodes 2] [--concurrency 2]
[--ordering serial|window] [--latency MS]``.

Starts a simulator process, ``--nodes`` ``celery -A tasks worker`` nodes (prefork,
``--concurrency`` each) on a Redis broker, then times, in alternating rounds, ``--n``
``cancel_request.delay()`` calls and ``--n`` ``tasks.noop`` calls, each from the first
``delay()`` to the last result. The ratio (cancels/s over no-ops/s) is what talking to Kraken
costs on top of Celery itself: the per-key ordering lock and nonce from Redis, signing, the
HTTP round trip on a kept-alive connection. Aims (issue 11): serial >= 0.8, window >= 0.9.

``--latency MS`` makes the simulator hold each answer, as the real Kraken's round trip does:
serial mode then sends one call per key at a time, so it tops out near 1000/MS cancels a
second whatever the fleet; window mode overlaps the calls.

Every part runs on this machine's cores, so the ratio is one of CPU per task: a second table
says, per role (this publisher, the worker nodes, their pool processes, the simulator, Redis),
how many µs of CPU a no-op and a cancel cost, from /proc over all rounds.
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid
from collections import Counter
from collections.abc import Callable

import _cpu
import redis
from _support import REPO, add_ordering, celery_stack, print_table, rate, sim_call
from celery.result import ResultSet

from kraken.pay import normalize_external_id
from kraken_pay_cli.local import Worker, wait_answering, workers
from tasks import cancel_request
from tasks.celery import app

noop = app.tasks["kraken_pay.noop"]

AIMS = {"serial": 0.8, "window": 0.9}


def _warm(nodes: list[Worker]) -> None:
    """Every node answers; enough no-ops run at once that each node takes some."""
    wait_answering(app, nodes)
    ResultSet([noop.delay() for _ in range(20)]).join_native(timeout=30)


def _timed(submit: Callable[[int], object], count: int) -> tuple[float, list]:
    started = time.perf_counter()
    results = ResultSet([submit(i) for i in range(count)])
    values = results.join_native(timeout=600, propagate=True)
    return time.perf_counter() - started, values


def _roles(nodes: list[Worker], sim_pid: int, redis_url: str) -> _cpu.Roles:
    roles = _cpu.Roles()
    roles.add("worker nodes", lambda: [n.proc.pid for n in nodes if n.proc is not None])
    roles.add("pool processes", lambda: [pid for n in nodes for pid in n.pool_pids()])
    roles.add("simulator", lambda: [sim_pid])
    client = redis.Redis.from_url(redis_url)
    try:
        redis_pid = int(client.info("server")["process_id"])
    finally:
        client.close()
    if _cpu.is_redis(redis_pid):  # a Redis of this machine, not one elsewhere
        roles.add("redis", lambda: [redis_pid])
    return roles


def _cpu_table(spent: dict[str, Counter[str]], tasks: int) -> None:
    noop = _cpu.per_task_us(spent["noop"], tasks)
    cancel = _cpu.per_task_us(spent["cancel"], tasks)
    rows = [("CPU per task (µs)", "kraken_pay.noop", "cancel_request", "extra")]
    for role in noop:
        rows.append(
            (
                role,
                f"{noop[role]:,.0f}",
                f"{cancel[role]:,.0f}",
                f"{cancel[role] - noop[role]:+,.0f}",
            )
        )
    print_table(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="tasks per measurement")
    parser.add_argument("--nodes", type=int, default=2, help="worker nodes")
    parser.add_argument("--concurrency", type=int, default=2, help="pool processes per node")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (median)")
    parser.add_argument(
        "--latency", type=float, default=0.0, help="ms the simulator holds each answer"
    )
    add_ordering(parser)
    args = parser.parse_args()
    with celery_stack(app, args.ordering, "bench-end-to-end", args.latency) as stack:
        queue, sim_url = stack.queue, stack.sim_url
        nodes = [
            Worker(
                stack.env,
                queue,
                stack.logs,
                concurrency=args.concurrency,
                name=f"bench{i}-{queue}",
                host="bench",
                loglevel="WARNING",
                cwd=REPO,
            )
            for i in range(args.nodes)
        ]
        with workers(*nodes):
            _warm(nodes)
            warm = [normalize_external_id(uuid.uuid4()) for _ in range(100)]
            sim_call(sim_url, "/_sim/requests", {"external_ids": warm})
            _timed(lambda i: cancel_request.delay(warm[i]), len(warm))
            _timed(lambda i: noop.delay(), 100)

            roles = _roles(nodes, stack.sim_pid, stack.nonce_url) if _cpu.available() else None
            spent: dict[str, Counter[str]] = {"noop": Counter(), "cancel": Counter()}

            def counted(kind: str, run: Callable[[], tuple]) -> tuple:
                return roles.spent_during(run, spent[kind]) if roles else run()

            before = sim_call(sim_url, "/_sim/stats")
            noops, cancels = [], []
            for _ in range(args.rounds):
                ids = [normalize_external_id(uuid.uuid4()) for _ in range(args.n)]
                sim_call(sim_url, "/_sim/requests", {"external_ids": ids})
                seconds, _ = counted("noop", lambda: _timed(lambda i: noop.delay(), args.n))
                noops.append(rate(args.n, seconds))
                seconds, results = counted(
                    "cancel",
                    lambda ids=ids: _timed(lambda i: cancel_request.delay(ids[i]), args.n),
                )
                cancels.append(rate(args.n, seconds))
                if {r["outcome"] for r in results} != {"cancelled"}:
                    raise SystemExit("not every request was cancelled: the run is not valid")
            after = sim_call(sim_url, "/_sim/stats")
    app.conf.update(task_default_queue="celery")

    applied = after["cancels_applied"] - before["cancels_applied"]
    if applied != args.n * args.rounds:
        raise SystemExit(f"{applied} cancels applied, {args.n * args.rounds} expected")
    noop_rate, cancel_rate = statistics.median(noops), statistics.median(cancels)
    fleet = f"{args.nodes} nodes x {args.concurrency} prefork, {args.ordering}"
    if args.latency:
        fleet += f", {args.latency:g} ms held"
    print_table(
        [
            ("task", "workers", "tasks", "tasks/s (median)", "ratio", "aim"),
            ("kraken_pay.noop", fleet, str(args.n), f"{noop_rate:,.0f}", "1.00", ""),
            (
                "cancel_request",
                fleet,
                str(args.n),
                f"{cancel_rate:,.0f}",
                f"{cancel_rate / noop_rate:.2f}",
                f">= {AIMS[args.ordering]}",
            ),
        ]
    )
    print(
        f"rounds: {args.rounds}; noop/s {[round(r) for r in noops]}, "
        f"cancel/s {[round(r) for r in cancels]}; "
        f"nonce rejections: {after['nonce_rejections'] - before['nonce_rejections']}"
    )
    if roles is not None:
        print()
        _cpu_table(spent, args.n * args.rounds)


if __name__ == "__main__":
    main()
