"""What the benchmarks share: a simulator process, their Redis, and a small result table.

Each benchmark runs as ``python bench/NAME.py``: Python puts bench/ first on the path, so
``from _support import ...`` finds this file, and nothing in bench/ shadows a package.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from kraken_pay_cli.local import databases, redis_db
from tasks.settings import DEFAULT_REDIS_URL

REPO = Path(__file__).resolve().parent.parent  # workers start here, where celeryconfig.py is


@contextlib.contextmanager
def simulator_process(*args: str) -> Iterator[str]:
    """Run ``python -m kraken.pay.simulator`` on a free port in its own process; yield its URL.

    Its own process, so the server does not share a core's GIL with the code measured.
    """
    proc = subprocess.Popen(
        [sys.executable, "-m", "kraken.pay.simulator", "--port", "0", *args],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        if "listening on" not in line:
            raise RuntimeError(f"simulator did not start: {line!r}")
        yield line.rsplit(" ", 1)[-1].strip()
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
