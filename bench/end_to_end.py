"""End-to-end throughput of cancel_request beside a no-op Celery task, same broker and workers.

Run: ``.venv/bin/python bench/end_to_end.py [--n 2000] [--nodes 2] [--concurrency 2]``.

Starts a simulator process, ``--nodes`` ``celery -A tasks worker`` nodes (prefork,
``--concurrency`` each) on a Redis broker, then times, in alternating rounds, ``--n``
``cancel_request.delay()`` calls and ``--n`` ``tasks.noop`` calls, each from the first
``delay()`` to the last result. The ratio (cancels/s over no-ops/s) is what talking to Kraken
costs on top of Celery itself: the per-key ordering lock and nonce from Redis, signing, the
HTTP round trip on a kept-alive connection. Aims (issue 11): serial >= 0.8, window >= 0.9.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from _support import REPO, broker_url, print_table, rate, redis_url, sim_call, simulator_process
from celery.result import ResultSet

from kraken.pay import normalize_external_id
from kraken_pay_cli.local import Worker, redis_server, wait_answering, worker_env, workers
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="tasks per measurement")
    parser.add_argument("--nodes", type=int, default=2, help="worker nodes")
    parser.add_argument("--concurrency", type=int, default=2, help="pool processes per node")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (median)")
    parser.add_argument(
        "--ordering",
        choices=("serial", "window"),
        default="serial",
        help="KRAKEN_ORDERING of the workers (window: the simulator gets a nonce window)",
    )
    args = parser.parse_args()
    sim_args = ("--nonce-window", str(60 * 10**9)) if args.ordering == "window" else ()

    queue = f"bench-{uuid.uuid4().hex[:8]}"
    with (
        tempfile.TemporaryDirectory(prefix="bench-end-to-end-") as logs,
        redis_server(redis_url()) as nonce_url,
        simulator_process(*sim_args) as sim_url,
    ):
        broker = broker_url(nonce_url)
        app.conf.update(broker_url=broker, result_backend=broker, task_default_queue=queue)
        os.environ["KRAKEN_QUEUE"] = queue  # cancel_request's own queue option reads it
        # Measure the path, not Kraken's Starter-tier budget (worker_env turns it off).
        env = worker_env(
            sim_url, nonce_url, broker_url=broker, tuning={}, KRAKEN_ORDERING=args.ordering
        )
        nodes = [
            Worker(
                env,
                queue,
                Path(logs),
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

            before = sim_call(sim_url, "/_sim/stats")
            noops, cancels = [], []
            for _ in range(args.rounds):
                ids = [normalize_external_id(uuid.uuid4()) for _ in range(args.n)]
                sim_call(sim_url, "/_sim/requests", {"external_ids": ids})
                seconds, _ = _timed(lambda i: noop.delay(), args.n)
                noops.append(rate(args.n, seconds))
                seconds, results = _timed(lambda i, ids=ids: cancel_request.delay(ids[i]), args.n)
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


if __name__ == "__main__":
    main()
