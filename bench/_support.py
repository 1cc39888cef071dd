"""What the benchmarks share: a simulator process, their Redis, and a small result table.

Each benchmark runs as ``python bench/NAME.py``: Python puts bench/ first on the path, so
``from _support import ...`` finds this file, and nothing in bench/ shadows a package.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from kraken_pay_cli.local import databases, redis_db, redis_server, worker_env
from tasks.settings import DEFAULT_REDIS_URL

REPO = Path(__file__).resolve().parent.parent  # workers start here, where celeryconfig.py is


@contextlib.contextmanager
def simulator_process(*args: str) -> Iterator[str]:
    """Run ``python -m kraken.pay.simulator`` on a free port in its own process; yield its URL.

    Its own process, so the server does not share a core's GIL with the code measured.
    """
    with simulator_popen(*args) as (url, _):
        yield url


@contextlib.contextmanager
def simulator_popen(*args: str) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """:func:`simulator_process`, yielding its process too (to read its CPU)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "kraken.pay.simulator", "--port", "0", *args],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        if "listening on" not in line:
            raise RuntimeError(f"simulator did not start: {line!r}")
        yield line.rsplit(" ", 1)[-1].strip(), proc
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def sim_call(url: str, path: str, payload: dict | None = None) -> dict:
    """One call to the simulator's control paths (``/_sim/...``): POST with a payload, else GET."""
    data = json.dumps(payload).encode() if payload is not None else None
    request = urllib.request.Request(
        url + path, data=data, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def redis_url() -> str:
    """The benchmarks' database of the Redis at REDIS_URL (default 127.0.0.1:6379): never
    one the test suite flushes nor one the demo takes (kraken_pay_cli.local.databases)."""
    return redis_db(os.environ.get("REDIS_URL", "").strip() or DEFAULT_REDIS_URL, databases.BENCH)


def broker_url(url: str) -> str:
    """The benchmarks' Celery broker and results, on the same server as ``url``."""
    return redis_db(url, databases.BENCH_BROKER)


def rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("inf")


def print_table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for n, row in enumerate(rows):
        print("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)))
        if n == 0:
            print("  ".join("-" * w for w in widths))


class Stopwatch:
    def __enter__(self) -> Stopwatch:
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.start


NONCE_WINDOW_NS = 60 * 10**9  # window mode is for keys with a nonce window set at Kraken


def add_ordering(parser: argparse.ArgumentParser) -> None:
    """``--ordering serial|window``: the workers' KRAKEN_ORDERING."""
    parser.add_argument(
        "--ordering",
        choices=("serial", "window"),
        default="serial",
        help="KRAKEN_ORDERING of the workers (window: the simulator gets a nonce window)",
    )


def simulator_args(ordering: str) -> tuple[str, ...]:
    """The simulator's arguments for ``ordering``: a nonce window for window mode."""
    return ("--nonce-window", str(NONCE_WINDOW_NS)) if ordering == "window" else ()


def send_to(app, broker: str, queue: str) -> None:
    """This process's tasks, ours included, go to ``queue`` on ``broker``.

    ``cancel_request`` and ``bulk_cancel`` carry their own queue option, read from
    KRAKEN_QUEUE, so ``task_default_queue`` alone would send them to ``kraken_pay``.
    """
    app.conf.update(broker_url=broker, result_backend=broker, task_default_queue=queue)
    os.environ["KRAKEN_QUEUE"] = queue


@dataclass(frozen=True)
class Stack:
    """What a Celery benchmark runs on: its queue, log folder, simulator, Redis and workers' env."""

    queue: str
    logs: Path
    sim_url: str
    nonce_url: str
    broker: str
    env: dict[str, str]
    sim_pid: int


@contextlib.contextmanager
def celery_stack(app, ordering: str, name: str, latency_ms: float = 0.0) -> Iterator[Stack]:
    """A simulator process, the benchmarks' Redis, and ``app``'s tasks sent to a fresh queue
    on it; workers started with ``stack.env`` measure the path, not Kraken's Starter budget
    (``worker_env`` turns the budget off). ``latency_ms``: the simulator holds each answer."""
    queue = f"{name}-{uuid.uuid4().hex[:8]}"
    held = ("--latency", f"{latency_ms:g}") if latency_ms else ()
    with (
        tempfile.TemporaryDirectory(prefix=f"{name}-") as logs,
        redis_server(redis_url()) as nonce_url,
        simulator_popen(*simulator_args(ordering), *held) as (sim_url, sim),
    ):
        broker = broker_url(nonce_url)
        send_to(app, broker, queue)
        env = worker_env(sim_url, nonce_url, broker_url=broker, tuning={}, KRAKEN_ORDERING=ordering)
        yield Stack(queue, Path(logs), sim_url, nonce_url, broker, env, sim.pid)
