"""The soak: cancellations under SIGKILLs and a Redis restart, counted in the simulator.

    .venv/bin/python bench/soak.py [--requests 1500] [--broker redis|rabbitmq] [--seed N]

A Redis of its own with AOF (everysec) holds the ledger, nonces and, with ``--broker redis``,
the queue and results; the simulator fails about 20% of calls across every fault kind; two
worker nodes (prefork, 2 each) and beat run as ``celery -A tasks``; the simulator holds each
answer 20 to 50 ms, as Kraken's round trip would. ``--requests`` ids go
through ``cancel_request.delay()`` and a third as many through one ``bulk_cancel``, while a
pool process or a whole node is SIGKILLed every 3 to 5 s (a killed node starts again) and
Redis is SIGKILLed and restarted once, for ``--chaos`` seconds; then everything must settle
within ``--timeout``. At the end: requests, lost (still pending at Kraken),
failed (closed as failures in the ledger), repeats (cancelled more than once), nonce
rejections and time. The goal is 0 lost and 0 failed with either broker.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import shutil
import signal
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from _support import REPO, print_table, sim_call, simulator_process

from kraken.pay import normalize_external_id
from kraken_pay_cli.demo.faults import fault_spec
from kraken_pay_cli.local import Beat, CeleryNode, RedisProcess, Worker, worker_env, workers

RABBITMQ = "amqp://guest:guest@127.0.0.1:5672//"

# Patient retries: everything asked for must settle through kills and a Redis restart.
TUNING = {
    "KRAKEN_TIMEOUT": "2",
    "KRAKEN_RETRY_BASE_DELAY": "0.05",
    "KRAKEN_RETRY_MAX_DELAY": "2",
    "KRAKEN_RETRY_MAX_ATTEMPTS": "1000",
    "KRAKEN_LEDGER_GRACE": "10",
    "CELERY_VISIBILITY_TIMEOUT": "60",
}


def chaos(
    nodes: list[Worker], redis: RedisProcess, stop: threading.Event, rand: random.Random
) -> dict:
    """SIGKILL a pool process or a whole node every 3 to 5 s; Redis once, early on."""
    done = {"pool": 0, "node": 0, "redis": 0}
    while not stop.wait(rand.uniform(3.0, 5.0)):
        if not done["redis"] and done["pool"] + done["node"] >= 2:
            redis.kill()
            time.sleep(1.0)  # down for a second, as a crash and a restart would be
            redis.start(timeout=20)
            done["redis"] += 1
            continue
        node = rand.choice(nodes)
        pool = node.pool_pids()
        if pool and rand.random() < 0.6:
            with contextlib.suppress(ProcessLookupError):
                os.kill(rand.choice(pool), signal.SIGKILL)
            done["pool"] += 1
        else:
            node.kill_node()
            node.start()
            done["node"] += 1
    return done


def environment(sim_url: str, redis_url: str, broker: str, queue: str) -> dict[str, str]:
    return worker_env(
        sim_url,
        redis_url,
        broker_url=broker,
        backend_url=redis_url,
        tuning=TUNING,
        KRAKEN_QUEUE=queue,
    )


def submit(ids: list[str], bulk: list[str]) -> int:
    """Ask for every cancellation as a web process would; an ask Redis refuses is asked again."""
    from tasks import bulk_cancel, cancel_request

    refused = 0
    for eid in ids:
        while True:
            try:
                cancel_request.delay(eid)
                break
            except Exception:
                refused += 1
                time.sleep(0.2)
    bulk_cancel.delay(bulk)
    return refused


@contextlib.contextmanager
def fleet(env: dict[str, str], logs: Path, queue: str) -> Iterator[list[Worker]]:
    """Two worker nodes (prefork, 2 each) and beat, all SIGKILLed on the way out."""
    nodes = [
        Worker(env, queue, logs, name=f"w{i}", host="soak", loglevel="WARNING", cwd=REPO)
        for i in (1, 2)
    ]
    beat = Beat(env, logs / "schedule", logs / "beat.log", loglevel="WARNING", cwd=REPO)
    every: list[CeleryNode] = [*nodes, beat]
    with workers(*every):
        try:
            yield nodes
        finally:
            for node in every:
                node.kill_node()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1500)
    parser.add_argument("--broker", choices=("redis", "rabbitmq"), default="redis")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds to wait at most")
    parser.add_argument("--chaos", type=float, default=90.0, help="seconds of kills")
    parser.add_argument(
        "--latency", default="20:50", help="ms the simulator holds each answer, as Kraken's RTT"
    )
    args = parser.parse_args()
    rand = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="kraken-soak-"))
    redis = RedisProcess(work, aof=True).start(timeout=20)
    queue = f"soak-{uuid.uuid4().hex[:6]}"
    started = time.monotonic()
    try:
        with simulator_process("--seed", str(args.seed), "--latency", args.latency) as sim_url:
            broker = redis.url if args.broker == "redis" else RABBITMQ
            env = environment(sim_url, redis.url, broker, queue)
            os.environ.update({k: env[k] for k in ("REDIS_URL", "KRAKEN_QUEUE")})
            from tasks.standalone import standalone_app

            app = standalone_app()
            app.conf.update(broker_url=broker, result_backend=redis.url)
            ids = [normalize_external_id(uuid.uuid4()) for _ in range(args.requests)]
            bulk = [normalize_external_id(uuid.uuid4()) for _ in range(args.requests // 3)]
            sim_call(sim_url, "/_sim/requests", {"external_ids": ids + bulk})
            sim_call(sim_url, "/_sim/faults", fault_spec(0.2))
            with fleet(env, work, queue) as nodes:
                stop = threading.Event()
                kills: dict = {}
                killer = threading.Thread(
                    target=lambda: kills.update(chaos(nodes, redis, stop, rand)), daemon=True
                )
                killer.start()
                refused = submit(ids, bulk)
                total = len(ids) + len(bulk)
                killer.join(max(0.0, args.chaos - (time.monotonic() - started)))
                stop.set()  # the kills end; now everything asked for must settle
                deadline = time.monotonic() + args.timeout
                while time.monotonic() < deadline:
                    summary = sim_call(sim_url, "/_sim/requests/summary")
                    if summary["by_state"].get("cancelled", 0) >= total:
                        break
                    time.sleep(1.0)
                killer.join(15)
                sim_call(sim_url, "/_sim/faults", {})
                summary = sim_call(sim_url, "/_sim/requests/summary")
                stats = sim_call(sim_url, "/_sim/stats")
        failed, still_open = _ledger_counts(redis.url)
    finally:
        redis.kill()
        shutil.rmtree(work, ignore_errors=True)
    seconds = time.monotonic() - started
    lost = total - summary["by_state"].get("cancelled", 0)
    rows = [("measure", "value")]
    rows += [
        ("broker", args.broker),
        ("requests", f"{total:,} ({len(ids):,} delay + {len(bulk):,} bulk)"),
        ("lost (still pending)", str(lost)),
        ("failed (ledger)", str(failed)),
        ("still open in the ledger", str(still_open)),
        ("repeats (cancelled twice or more)", str(summary["cancel_calls"][">1"])),
        ("nonce rejections", str(stats["nonce_rejections"])),
        ("asks refused while Redis was down", str(refused)),
        (
            "kills",
            f"{kills.get('pool', 0)} pool, {kills.get('node', 0)} node, "
            f"{kills.get('redis', 0)} Redis",
        ),
        ("time", f"{seconds:.0f} s"),
    ]
    print_table(rows)


def _ledger_counts(redis_url: str) -> tuple[int, int]:
    """(closed as failures, still open) in the ledger."""
    import json

    import redis as redis_sync

    with contextlib.suppress(Exception):
        client = redis_sync.Redis.from_url(redis_url)
        records = client.hvals("kraken:ledger:closed")
        failed = sum(1 for raw in records if json.loads(raw).get("outcome") == "failed")
        return failed, int(client.hlen("kraken:ledger:open"))
    return -1, -1


if __name__ == "__main__":
    main()
