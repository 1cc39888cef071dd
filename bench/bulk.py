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
import uuid
from collections.abc import Iterator
from pathlib import Path

from _support import REPO, Stopwatch, add_ordering, celery_stack, print_table, rate, sim_call
from celery.result import ResultSet

from kraken.pay import normalize_external_id
from kraken_pay_cli.local import Worker
from tasks import bulk_cancel, cancel_request
from tasks.celery import app


def _pending(sim_url: str, count: int) -> list[str]:
    ids = [normalize_external_id(uuid.uuid4()) for _ in range(count)]
    for start in range(0, count, 10_000):
        sim_call(sim_url, "/_sim/requests", {"external_ids": ids[start : start + 10_000]})
    return ids


def _vm_hwm_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for process {pid}")


def peak_rss_mib(node: Worker) -> tuple[float, float]:
    """Peak resident set size (VmHWM) in MiB: the highest of the pool processes, where
    chunks run, and the main process, which receives and acknowledges the messages."""
    assert node.proc is not None
    pool = max(_vm_hwm_mib(pid) for pid in node.pool_pids())
    return pool, _vm_hwm_mib(node.proc.pid)


@contextlib.contextmanager
def _node(env: dict[str, str], queue: str, concurrency: int, log_dir: str) -> Iterator[Worker]:
    """A fresh worker node, ready, stopped on the way out."""
    name = f"bench-{uuid.uuid4().hex[:6]}"
    node = Worker(
        env, queue, Path(log_dir), concurrency=concurrency, name=name, host="bench", cwd=REPO
    )
    with node:
        node.wait_ready(app, timeout=60.0)
        yield node


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
    add_ordering(parser)
    args = parser.parse_args()
    with celery_stack(app, args.ordering, "bench-bulk") as stack:
        env, queue, log_dir, sim_url = stack.env, stack.queue, stack.logs, stack.sim_url
        with _node(env, queue, args.concurrency, log_dir):
            _bulk(sim_url, 200)  # warm up: connections, scripts, imports
            _one_task_per_id(sim_url, 200)
            bulk_seconds = _bulk(sim_url, args.n)
            task_seconds = _one_task_per_id(sim_url, args.n)
        peaks = []
        for count in (args.n, args.big):
            with _node(env, queue, args.concurrency, log_dir) as node:
                seconds = _bulk(sim_url, count)
                peaks.append((count, seconds, *peak_rss_mib(node)))
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
