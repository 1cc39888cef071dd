"""``kraken-pay demo``: it cancels everything it created, says so, and leaves nothing behind."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import pytest
import redis
from tasks_support import REPO, redis_db, wait_for

from kraken.pay import Credentials, KrakenError, KrakenPayClient
from kraken.pay.simulator import DEMO_API_KEY, DEMO_API_SECRET, Simulator
from tasks.demo import FAULT_ERRORS, FAULT_KINDS, Report, Tally, fault_spec, split_ids, worker_env

KRAKEN_PAY = str(Path(sys.executable).with_name("kraken-pay"))


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
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KRAKEN_", "CELERY_"))}
    return env | {"REDIS_URL": redis_url} | extra


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


# ----------------------------------------------------------------------------- runs


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


@pytest.mark.parametrize(("kind", "error_class"), FAULT_ERRORS.items())
async def test_each_fault_is_the_error_class_the_demo_counts_it_as(kind, error_class):
    async with Simulator() as sim:
        credentials = Credentials(DEMO_API_KEY, DEMO_API_SECRET)
        async with KrakenPayClient(credentials, base_url=sim.url, timeout=2) as client:
            sim.create_requests(["AAAAAAAAAAE"])
            sim.set_faults({kind: {"next": 1}})
            with pytest.raises(KrakenError) as caught:
                await client.cancel_request("AAAAAAAAAAE")
    assert type(caught.value).__name__ == error_class


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


# ----------------------------------------------------------------------------- rules


def test_the_faults_add_up_to_the_rate_asked_for():
    spec = fault_spec(0.1)
    assert set(spec) == set(FAULT_KINDS)
    none_fires = 1.0
    for fault in spec.values():
        none_fires *= 1 - fault["rate"]
    assert 1 - none_fires == pytest.approx(0.1, abs=1e-4)


def test_no_faults_at_a_rate_of_zero():
    assert fault_spec(0) == {}


def report(**tally: object) -> Report:
    stats = {"faults_injected": {}, "requests": 10, "nonce_rejections": 0}
    summary = {"by_state": {"cancelled": 10}}
    return Report(Tally(sent=10, seconds=1.0, **tally), stats, summary)  # type: ignore[arg-type]


def test_a_failed_cancellation_is_a_problem_and_so_exits_non_zero():
    assert report(outcomes=Counter(cancelled=10)).problems() == []
    failed = report(outcomes=Counter(cancelled=9), failures=Counter(RetriesExhausted=1))
    assert failed.problems() == ["1 cancellation(s) failed"]
    assert ("  RetriesExhausted", "1") in failed.rows()
    assert ("  (the last call of a failed task was not)", "") in failed.rows()


def test_unfinished_cancellations_and_nonce_rejections_are_problems():
    late = report(outcomes=Counter(cancelled=8), unfinished=2)
    assert late.problems() == ["2 cancellation(s) did not finish in time"]
    rejected = report(outcomes=Counter(cancelled=10))
    rejected.stats["nonce_rejections"] = 1
    assert rejected.problems() == ["1 nonce(s) rejected by Kraken"]


def test_the_workers_get_the_demo_settings_and_none_of_the_users(monkeypatch):
    monkeypatch.setenv("KRAKEN_API_KEY", "the user's own key")
    monkeypatch.setenv("CELERY_BROKER_URL", "redis://users-broker/0")
    monkeypatch.setenv("DJANGO_SETTINGS_MODULE", "their_site.settings")
    env = worker_env("http://127.0.0.1:9999", "redis://127.0.0.1:6379/9")
    assert env["KRAKEN_API_KEY"] == DEMO_API_KEY
    assert env["KRAKEN_API_URL"] == "http://127.0.0.1:9999"
    assert env["REDIS_URL"] == "redis://127.0.0.1:6379/9"
    assert "CELERY_BROKER_URL" not in env
    assert "DJANGO_SETTINGS_MODULE" not in env


def test_a_third_of_the_ids_go_to_bulk_cancel_and_each_id_one_way():
    ids = [f"id{n}" for n in range(30)]
    by_task, by_bulk = split_ids(ids, 1 / 3)
    assert len(by_bulk) == 10
    assert sorted(by_task + by_bulk) == sorted(ids)
    assert any(eid in by_bulk for eid in ids[:5])  # the already paid, first, go both ways


def test_the_bulk_summary_adds_its_outcomes_failures_and_hand_offs():
    tally = Tally()
    tally.add_bulk(
        {
            "outcomes": {"cancelled": 7, "already_cancelled": 0, "not_cancellable": 1},
            "failed": [{"external_id": "AAAAAAAAAAE", "error": "InvalidRequest: EAPI:Bad request"}],
            "handed_off": 2,
        }
    )
    assert tally.outcomes == {"cancelled": 7, "not_cancellable": 1}
    assert tally.failures == {"InvalidRequest": 1}
    assert tally.handed_off == 2
