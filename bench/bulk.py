"""bulk_cancel beside one cancel_request per id, through the same workers; peak worker memory.

Run: ``.venv/bin/python bench/bulk.py [--n 10000] [--big 100000] [--ordering serial]``.

Starts a simulator process and one ``celery -A tasks worker`` node (prefork, the rate budget
off, default chunk and lanes) on a Redis broker, then, in the same run and on the same node:

* cancels/s of ``bulk_cancel.delay(ids).get()`` for ``--n`` ids, from ``delay`` to the
  summary;
* cancels/s of ``--n`` ``cancel_request.delay(id)``, from the first ``delay`` to the last
  result; the ratio is what bulk saves over one Celery task per id;
* peak memory of a worker node for ``bulk_cancel`` of ``--n`` and of ``--big`` ids: each on
  a fresh node, ``VmHWM`` (peak resident set size) from ``/proc/<pid>/status`` of its pool
  processes (the highest) and of its main process, read once the summary has arrived.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from celery.result import ResultSet

# bench/ holds a tasks.py of its own; take bench/ off the path while importing the package.
sys.path.remove(str(Path(__file__).resolve().parent))
from kraken.pay import normalize_external_id
from kraken.pay.simulator import DEMO_API_KEY, DEMO_API_SECRET
from tasks import bulk_cancel, cancel_request
from tasks.celery import app
from tasks.embedded import redis_db, redis_server

sys.path.append(str(Path(__file__).resolve().parent))
from _support import Stopwatch, print_table, rate, redis_url, sim_call, simulator_process

noop = app.tasks["kraken_pay.noop"]

BROKER_DB = 14  # apart from the test suite's databases, which tests flush
CELERY = str(Path(sys.executable).with_name("celery"))
REPO = Path(__file__).resolve().parent.parent


def _pending(sim_url: str, count: int) -> list[str]:
    ids = [normalize_external_id(uuid.uuid4()) for _ in range(count)]
    for start in range(0, count, 10_000):
        sim_call(sim_url, "/_sim/requests", {"external_ids": ids[start : start + 10_000]})
    return ids


class Node:
    """One worker node in its own process group; reads its processes' peak memory."""

    def __init__(self, env: dict[str, str], queue: str, concurrency: int, log_dir: str) -> None:
        self.log = open(Path(log_dir) / f"{queue}-{uuid.uuid4().hex[:6]}.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                *(CELERY, "-A", "tasks", "worker", "--pool", "prefork"),
                *("--concurrency", str(concurrency), "-Q", queue),
                *("-n", f"bench-{uuid.uuid4().hex[:6]}@%h", "--loglevel", "WARNING"),
                *("--without-gossip", "--without-mingle", "--without-heartbeat"),
            ],
            env=env,
            cwd=REPO,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit("the worker exited; see its log")
            with contextlib.suppress(Exception):
                noop.delay().get(timeout=2)
                return
        raise SystemExit(f"the worker did not start within {timeout:g}s")

    def pool_pids(self) -> list[int]:
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
        return [int(pid) for pid in children.split()]

    def peak_rss_mib(self) -> tuple[float, float]:
        """Peak resident set size (VmHWM) in MiB: the highest of the pool processes, where
        chunks run, and the main process, which receives and acknowledges the messages."""
        pool = max(_vm_hwm_mib(pid) for pid in self.pool_pids())
        return pool, _vm_hwm_mib(self.proc.pid)

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.log.close()


def _vm_hwm_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for process {pid}")


@contextlib.contextmanager
def _node(env: dict[str, str], queue: str, concurrency: int, log_dir: str) -> Iterator[Node]:
    node = Node(env, queue, concurrency, log_dir)
    try:
        node.wait_ready()
        yield node
    finally:
        node.stop()


def _bulk(sim_url: str, count: int) -> float:
    """Seconds from ``bulk_cancel.delay`` of ``count`` fresh ids to its summary."""
    ids = _pending(sim_url, count)
    with Stopwatch() as watch:
        summary = bulk_cancel.delay(ids).get(timeout=3600)
    if summary["outcomes"]["cancelled"] != count:
        raise SystemExit(f"bulk_cancel did not cancel every id: {summary['outcomes']}")
    return watch.seconds


def _one_task_per_id(sim_url: str, count: int) -> float:
    ids = _pending(sim_url, count)
    with Stopwatch() as watch:
        results = ResultSet([cancel_request.delay(eid) for eid in ids])
        values = results.join_native(timeout=3600, propagate=True)
    if {value["outcome"] for value in values} != {"cancelled"}:
        raise SystemExit("cancel_request did not cancel every id")
    return watch.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000, help="ids for the throughput runs")
    parser.add_argument("--big", type=int, default=100_000, help="ids for the second memory run")
    parser.add_argument("--concurrency", type=int, default=2, help="pool processes of the node")
    parser.add_argument(
        "--ordering",
        choices=("serial", "window"),
        default="serial",
        help="KRAKEN_ORDERING of the workers (window: the simulator gets a nonce window)",
    )
    args = parser.parse_args()
    sim_args = ("--nonce-window", str(60 * 10**9)) if args.ordering == "window" else ()

    queue = f"bench-bulk-{uuid.uuid4().hex[:8]}"
    log_dir = tempfile.mkdtemp(prefix="bench-bulk-")
    with redis_server(redis_url()) as nonce_url, simulator_process(*sim_args) as sim_url:
        broker = redis_db(nonce_url, BROKER_DB)
        app.conf.update(broker_url=broker, result_backend=broker, task_default_queue=queue)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("KRAKEN_", "CELERY_"))}
        env.update(
            KRAKEN_API_KEY=DEMO_API_KEY,
            KRAKEN_API_SECRET=DEMO_API_SECRET,
            KRAKEN_API_URL=sim_url,
            REDIS_URL=nonce_url,
            CELERY_BROKER_URL=broker,
            CELERY_RESULT_BACKEND=broker,
            KRAKEN_RATE_PER_SECOND="off",
            KRAKEN_ORDERING=args.ordering,
        )
        with _node(env, queue, args.concurrency, log_dir):
            _bulk(sim_url, 200)  # warm up: connections, scripts, imports
            _one_task_per_id(sim_url, 200)
            bulk_seconds = _bulk(sim_url, args.n)
            task_seconds = _one_task_per_id(sim_url, args.n)
        peaks = []
        for count in (args.n, args.big):
            with _node(env, queue, args.concurrency, log_dir) as node:
                seconds = _bulk(sim_url, count)
                peaks.append((count, seconds, *node.peak_rss_mib()))
        stats = sim_call(sim_url, "/_sim/stats")

    bulk_rate, task_rate = rate(args.n, bulk_seconds), rate(args.n, task_seconds)
    workers = f"1 node x {args.concurrency} prefork, {args.ordering}, budget off"
    print_table(
        [
            ("how", "workers", "ids", "cancels/s", "ratio"),
            ("cancel_request per id", workers, f"{args.n:,}", f"{task_rate:,.0f}", "1.00"),
            (
                "bulk_cancel",
                workers,
                f"{args.n:,}",
                f"{bulk_rate:,.0f}",
                f"{bulk_rate / task_rate:.2f}",
            ),
        ]
    )
    print()
    print_table(
        [
            ("bulk_cancel ids", "seconds", "cancels/s", "peak RSS: pool process", "main process"),
            *(
                (
                    f"{count:,}",
                    f"{seconds:.1f}",
                    f"{rate(count, seconds):,.0f}",
                    f"{pool:.1f} MiB",
                    f"{main:.1f} MiB",
                )
                for count, seconds, pool, main in peaks
            ),
        ]
    )
    print(f"nonce rejections: {stats['nonce_rejections']}; rate limited: {stats['rate_limited']}")


if __name__ == "__main__":
    main()
