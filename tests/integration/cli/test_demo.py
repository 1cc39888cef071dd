"""``kraken-pay demo``: it cancels everything it created, says so, and leaves nothing behind."""

from __future__ import annotations

import queue
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import redis
from command_support import KRAKEN_PAY, clean_env
from tasks_support import REPO, redis_db, wait_for

from kraken_pay_cli.demo.faults import FAULT_ERRORS


class Demo:
    """``kraken-pay demo`` in a process of its own, its output read line by line as it comes."""

    def __init__(self, *args: str, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [KRAKEN_PAY, "demo", *args],
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self._queue: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._queue.put(line.rstrip("\n"))

    def wait_for_line(self, starting: str, timeout: float = 60.0) -> str:
        def seen() -> str | None:
            while not self._queue.empty():
                self.lines.append(self._queue.get())
            return next((line for line in self.lines if line.startswith(starting)), None)

        return wait_for(seen, timeout, f"a line starting {starting!r}: {self.lines}")

    def finish(self, timeout: float = 90.0) -> tuple[int, str, str]:
        code = self.proc.wait(timeout)
        stderr = self.proc.stderr.read() if self.proc.stderr else ""
        self.wait_for_line("")  # drain what the reader has
        wait_for(lambda: self._queue.empty(), 5, "the rest of the output")
        while not self._queue.empty():
            self.lines.append(self._queue.get())
        return code, "\n".join(self.lines), stderr


def demo_env(redis_url: str, **extra: str) -> dict[str, str]:
    return clean_env(REDIS_URL=redis_url, **extra)


def processes_with(marker: str) -> list[str]:
    """Command lines of live processes that contain ``marker``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker in cmdline and state != "Z":
            found.append(cmdline)
    return found


def table(output: str) -> dict[str, str]:
    """The demo's final table as {label: value}."""
    rows = {}
    for line in output.splitlines():
        match = re.fullmatch(r"  (\s*\S.*?)\s{2,}(\S.*)", line)
        if match:
            rows[match[1]] = match[2]
    return rows


def claimed_database(output: str) -> int:
    match = re.search(r"database (\d+) \(was empty", output)
    assert match, output
    return int(match[1])


def workers_of(demo: Demo) -> str:
    """The mark every worker of this demo has on its command line: its hostname's suffix."""
    return f"-{demo.proc.pid}@"


def test_the_demo_cancels_every_request_and_leaves_nothing_behind(redis_url):
    demo = Demo("--requests", "60", "--seed", "7", env=demo_env(redis_url))
    code, output, stderr = demo.finish()

    assert code == 0, output + stderr
    rows = table(output)
    assert rows["cancelled"] == "54"
    by_bulk = int(rows["  by bulk_cancel"].split()[0])
    assert int(rows["  by cancel_request.delay()"]) + by_bulk == 54
    assert by_bulk > 0
    assert rows["not cancellable"] == "6"
    assert rows["confirmed by Kraken"] == "54 of 54 by webhook"
    assert rows["failed"] == "0"
    assert rows["nonce rejections"] == "0"
    assert re.fullmatch(r"\d+ cancels/s", rows["throughput"])
    # The same figures, read from the workers' /metrics.
    assert "from /metrics of the 2 workers" in output
    assert rows["  outcome=cancelled"] == "54"
    assert rows["  outcome=not_cancellable"] == "6"
    calls = rows["retried"].split(" of ")[1].split()[0]
    assert rows["kraken_pay_kraken_calls_total"] == calls
    assert rows["kraken_pay_nonce_rejections_total"] == "0"
    assert "cancelling   60/60 done, 0 failed" in output
    db = redis.Redis.from_url(redis_db(redis_url, claimed_database(output)))
    assert db.dbsize() == 0
    assert processes_with(workers_of(demo)) == []
    assert stderr == ""


def test_retries_are_counted_by_the_error_class_the_client_saw(redis_url):
    demo = Demo("--requests", "60", "--fault-rate", "0.5", "--seed", "3", env=demo_env(redis_url))
    code, output, stderr = demo.finish()

    assert code == 0, output + stderr
    rows = table(output)
    retried, calls = map(
        int, re.fullmatch(r"(\d+) of (\d+) Kraken calls", rows["retried"]).groups()
    )
    labels = list(rows)
    under_retried = labels[labels.index("retried") + 1 : labels.index("nonce rejections")]
    by_class = {label.strip(): int(rows[label]) for label in under_retried}
    assert 0 < retried < calls
    assert sum(by_class.values()) == retried
    assert set(by_class) <= set(FAULT_ERRORS.values())


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_demo_stops_every_process_it_started(redis_url, signum):
    demo = Demo("--requests", "1000", env=demo_env(redis_url))
    demo.wait_for_line("cancelling")
    assert processes_with(workers_of(demo)), "the workers run while the demo cancels"

    demo.proc.send_signal(signum)
    code, output, stderr = demo.finish(timeout=30)

    assert code == 130, output + stderr
    assert stderr.strip() == "kraken-pay: interrupted"
    assert processes_with(workers_of(demo)) == []
    db = redis.Redis.from_url(redis_db(redis_url, claimed_database(output)))
    assert db.dbsize() == 0


def test_without_a_redis_the_demo_starts_a_redis_server_and_stops_it():
    demo = Demo("--requests", "30", env=demo_env("redis://127.0.0.1:1/0"))
    code, output, stderr = demo.finish()

    assert code == 0, output + stderr
    match = re.search(r"a redis-server started for the demo at redis://127.0.0.1:(\d+)/0", output)
    assert match, output
    assert table(output)["cancelled"] == "27"
    assert processes_with(f"--port {match[1]}") == []
    assert processes_with(workers_of(demo)) == []


def test_without_redis_server_installed_the_demo_uses_fakeredis():
    venv_only = str(Path(sys.executable).parent)  # no redis-server on this PATH
    demo = Demo("--requests", "20", env=demo_env("redis://127.0.0.1:1/0", PATH=venv_only))
    code, output, stderr = demo.finish()

    assert code == 0, output + stderr
    assert "fakeredis's server in this process" in output
    assert table(output)["cancelled"] == "18"
