"""``kraken-pay demo``: the whole system on this machine, against the simulator, in seconds.

What runs: the Kraken Pay simulator (in this process, failing about one Kraken call in ten
in six ways), a Redis, and two ``celery -A tasks worker`` processes with the simulator's
demo key. The demo creates payment requests in the simulator, cancels two thirds of them
through ``cancel_request.delay()`` and the rest through one ``bulk_cancel``, and prints what
happened: outcomes, failures, retries by error class, nonce rejections, throughput, and how
many cancellations Kraken confirmed by webhook (the simulator notifies a receiver in this
process, whose ``handle_callback`` tasks the workers run; see tasks/demo_webhooks.py).

The Redis is the one at ``REDIS_URL`` if it answers, in a database the demo finds empty and
empties again on the way out, so it never touches anyone's data; otherwise a
``redis-server`` it starts, or, without one installed, fakeredis's server in this process.
Everything the demo starts is stopped on the way out, on Ctrl-C and SIGTERM too.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

import redis

from kraken.pay.simulator import DEMO_API_KEY, DEMO_API_SECRET, SimulatorThread
from tasks.cli import redact, release_results
from tasks.demo_metrics import MetricsFigures, metrics_figures
from tasks.demo_webhooks import HOOK, receiver, wait_confirmed
from tasks.embedded import redis_answers, redis_db, redis_server
from tasks.settings import DEFAULT_REDIS_URL

__all__ = ["DemoError", "DemoOptions", "fault_spec", "run_demo", "split_ids", "worker_env"]

# The faults the simulator injects, sharing the fault rate equally, and the error class the
# client raises for each (tests/test_demo.py checks the pairs against the simulator). Each is
# one the tasks must ride out: the connection dropped before or after Kraken acted, a
# proxy's 5xx page, a cut-off body, a rate limit, maintenance.
FAULT_ERRORS = {
    "reset_before": "TransportError",
    "reset_after": "TransportError",
    "http_5xx": "TransportError",
    "malformed_json": "MalformedResponse",
    "rate_limit": "RateLimited",
    "service_unavailable": "ServiceUnavailable",
}
FAULT_KINDS = tuple(FAULT_ERRORS)

# The workers' settings: short timeouts and quick retries, so faults cost milliseconds.
_WORKER_SETTINGS = {
    "KRAKEN_TIMEOUT": "2",
    "KRAKEN_RETRY_BASE_DELAY": "0.05",
    "KRAKEN_RETRY_MAX_DELAY": "1",
    "KRAKEN_RETRY_MAX_ATTEMPTS": "10",
    "KRAKEN_RETRY_DEADLINE": "60",
    "CELERY_VISIBILITY_TIMEOUT": "60",
    # The simulator has no rate limit; Kraken's Starter-tier budget would make 300 cancels
    # take a quarter of an hour.
    "KRAKEN_RATE_PER_SECOND": "off",
}
# Databases 10 to 15 belong to the test suite; the demo takes the first empty one below.
_DATABASES = range(9, 0, -1)
_OWNER_KEY = "kraken-pay-demo:owner"
_STOP_TIMEOUT = 10.0  # seconds workers get for a warm shutdown before SIGKILL
_CONFIRM_TIMEOUT = 15.0  # seconds the notifications get to be handled once cancels are done


class DemoError(Exception):
    """Something the demo needs is missing; the message says what to do."""


@dataclass(frozen=True)
class DemoOptions:
    requests: int = 300
    paid: int = 10  # of which already paid: "not cancellable" is an outcome, not a failure
    workers: int = 2
    concurrency: int = 2
    fault_rate: float = 0.1
    seed: int | None = None
    bulk_share: float = 1 / 3  # of the ids, the share cancelled by one bulk_cancel
    timeout: float = 120.0  # seconds for all cancellations before the demo gives up


def fault_spec(rate: float) -> dict[str, dict[str, float]]:
    """Faults for the simulator so that about ``rate`` of calls meet one (kinds draw in turn)."""
    if rate <= 0:
        return {}
    each = 1 - (1 - rate) ** (1 / len(FAULT_KINDS))
    return {kind: {"rate": round(each, 6)} for kind in FAULT_KINDS}


def run_demo(options: DemoOptions, out: TextIO = sys.stdout) -> int:
    """Run the demo; the exit status is 0 only when every cancellation got its outcome."""
    stack = contextlib.ExitStack()
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)  # as Ctrl-C
    try:
        return _run(stack, options, _Printer(out))
    finally:
        _ignore_signals()  # a second Ctrl-C must not cut the clean-up short
        try:
            stack.close()
        finally:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            signal.signal(signal.SIGTERM, previous)


def _run(stack: contextlib.ExitStack, options: DemoOptions, say: _Printer) -> int:
    workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="kraken-pay-demo-")))
    redis_url, where = _demo_redis(stack)
    say(f"Redis        {where}")
    sim = stack.enter_context(SimulatorThread(seed=options.seed))
    say(f"simulator    {sim.url} (Kraken Pay, demo key)")
    env = worker_env(sim.url, redis_url)
    os.environ["KRAKEN_JWKS_URL"] = sim.jwks_url  # the receiver verifies with the simulator's
    _use_broker(env)
    stack.callback(release_results)
    nodes = [
        stack.enter_context(_worker(env, f"demo{n + 1}", options.concurrency, workdir))
        for n in range(options.workers)
    ]
    ids = _create_requests(sim, options)
    say(f"requests     {len(ids)} payment requests created, {options.paid} of them already paid")
    _wait_ready(nodes)
    say(f"workers      {len(nodes)} celery workers (prefork, {options.concurrency} processes each)")
    _receive_notifications(stack, sim, say)
    sim.set_faults(fault_spec(options.fault_rate))
    kinds = ", ".join(FAULT_KINDS)
    say(f"faults       about {options.fault_rate:.0%} of Kraken calls fail: {kinds}")
    by_task, by_bulk = split_ids(ids, options.bulk_share)
    say(f"cancelling   {len(by_task)} with cancel_request.delay(), {len(by_bulk)} with bulk_cancel")
    tally = _cancel_all(by_task, by_bulk, options.timeout, nodes, sim, say)
    sim.clear_faults()
    summary = sim.summary()
    sim.wait_webhooks(_CONFIRM_TIMEOUT)
    expected = summary["by_state"].get("cancelled", 0)
    confirmed = wait_confirmed(redis_url, expected, _CONFIRM_TIMEOUT)
    report = Report(tally, sim.stats(), summary, confirmed=confirmed)
    say.table(report.rows())
    figures = metrics_figures([f"http://127.0.0.1:{node.metrics_port}/metrics" for node in nodes])
    say(f"from /metrics of the {len(nodes)} workers (KRAKEN_PAY_METRICS_PORT):")
    say.table(figures.rows())
    report.metrics = figures
    for problem in report.problems():
        say(f"problem: {problem}")
    if report.problems():
        say.tail_of_logs(nodes)
        return 1
    return 0


def _receive_notifications(
    stack: contextlib.ExitStack, sim: SimulatorThread, say: _Printer
) -> None:
    """The receiver in this process, registered with the simulator; on the way out the
    simulator forgets it first, then it stops, before the workers do."""
    from tasks.standalone import standalone_app

    sim.register_webhook(stack.enter_context(receiver(standalone_app())))
    stack.callback(sim.clear_webhooks)
    say(f"receiver     {sim.webhooks()[0]} (Kraken's notifications, to handle_callback)")


# ----------------------------------------------------------------------------- Redis


def _demo_redis(stack: contextlib.ExitStack) -> tuple[str, str]:
    """(URL, description): a free database of the user's Redis, else one started here."""
    user_url = os.environ.get("REDIS_URL", "").strip() or DEFAULT_REDIS_URL
    if redis_answers(user_url):
        url = _claim_database(user_url)
        if url is not None:
            stack.callback(_empty_database, url)
            db = urlsplit(url).path.lstrip("/")
            return url, f"{_safe(user_url)}, database {db} (was empty; emptied on exit)"
    if shutil.which("redis-server"):
        where = "a redis-server started for the demo"
    else:
        where = "fakeredis's server in this process (no redis-server installed)"
    try:
        url = stack.enter_context(redis_server(None))
    except ImportError:
        raise DemoError(
            f"no Redis: none answers at {_safe(user_url)}, redis-server is not installed, and "
            "fakeredis is missing (pip install 'kraken-pay-cancel[test]')"
        ) from None
    return url, f"{where} at {url}"


def _claim_database(url: str) -> str | None:
    """The URL of an empty database, marked as the demo's so another demo passes it by."""
    for db in _DATABASES:
        candidate = redis_db(url, db)
        client = redis.Redis.from_url(candidate)
        try:
            if client.dbsize() == 0 and client.set(_OWNER_KEY, os.getpid(), nx=True):
                if client.dbsize() == 1:
                    return candidate
                client.delete(_OWNER_KEY)  # someone else started using it at the same time
        except redis.ResponseError:  # "DB index is out of range": fewer databases configured
            continue
        finally:
            client.close()
    return None


def _empty_database(url: str) -> None:
    """Delete every key of the demo's database: it was empty when the demo took it."""
    client = redis.Redis.from_url(url)
    try:
        for batch in _batches(client.scan_iter(count=1000), 1000):
            client.unlink(*batch)
    except redis.RedisError:
        pass  # the server went away; nothing is left to clean
    finally:
        client.close()


def _batches(items: Iterator[Any], size: int) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _safe(url: str) -> str:
    return redact(url)


# ----------------------------------------------------------------------------- workers


def worker_env(sim_url: str, redis_url: str) -> dict[str, str]:
    """A worker's environment: the simulator, its demo key, the demo's Redis, quick retries."""
    env = {
        name: value
        for name, value in os.environ.items()
        # A user's DJANGO_SETTINGS_MODULE would make Celery load that Django site too.
        if not name.startswith(("KRAKEN_", "CELERY_"))
        and name not in ("REDIS_URL", "DJANGO_SETTINGS_MODULE")
    }
    env.update(_WORKER_SETTINGS)
    env.update(
        {
            "KRAKEN_API_KEY": DEMO_API_KEY,
            "KRAKEN_API_SECRET": DEMO_API_SECRET,
            "KRAKEN_API_URL": sim_url,
            "REDIS_URL": redis_url,
            "KRAKEN_CALLBACK_HOOK": HOOK,  # counts the cancellations Kraken confirmed
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def _use_broker(env: dict[str, str]) -> None:
    """Point this process's Celery app at the demo's Redis before it connects anywhere."""
    from tasks.settings import forget
    from tasks.standalone import standalone_app

    for name in ("REDIS_URL", "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND"):
        os.environ.pop(name, None)
    os.environ["REDIS_URL"] = env["REDIS_URL"]
    app = standalone_app()
    forget(app)
    app.conf.update(broker_url=env["REDIS_URL"], result_backend=env["REDIS_URL"])


@dataclass
class _Node:
    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    metrics_port: int

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""


@contextlib.contextmanager
def _worker(env: dict[str, str], name: str, concurrency: int, workdir: Path) -> Iterator[_Node]:
    """One ``celery worker`` in a process group of its own, stopped (TERM, then KILL) on exit."""
    hostname = f"{name}-{os.getpid()}@{socket.gethostname()}"
    command = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "tasks",
        "worker",
        "--pool=prefork",
        f"--concurrency={concurrency}",
        f"--hostname={hostname}",
        "--without-gossip",
        "--without-mingle",
        "--loglevel=INFO",
    ]
    log_path = workdir / f"{name}.log"
    port = _free_port()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            command,
            env=env | {"KRAKEN_PAY_METRICS_PORT": str(port)},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches the demo only; the demo stops the workers
        )
    try:
        yield _Node(hostname, proc, log_path, port)
    finally:
        _stop(proc)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _stop(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(_STOP_TIMEOUT)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # a stuck worker, or pool children left behind
    proc.wait()


def _wait_ready(nodes: list[_Node], timeout: float = 60.0) -> None:
    """Return once every worker answers a ping; fail with its last log line if it died."""
    from tasks.standalone import standalone_app

    app = standalone_app()
    deadline = time.monotonic() + timeout
    waiting = {node.name for node in nodes}
    while waiting:
        for node in nodes:
            if node.proc.poll() is not None:
                raise DemoError(f"worker {node.name} exited: {_last_line(node.log())}")
        replies = app.control.ping(destination=sorted(waiting), timeout=0.5)
        waiting -= {name for reply in replies for name in reply}
        if waiting and time.monotonic() > deadline:
            raise DemoError(f"workers not ready after {timeout:g}s: {', '.join(sorted(waiting))}")


def _last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1].strip() if lines else "(no output)"


# ----------------------------------------------------------------------------- the run


def _create_requests(sim: SimulatorThread, options: DemoOptions) -> list[str]:
    ids = [uuid.uuid4() for _ in range(options.requests)]
    paid = min(options.paid, len(ids))
    sim.create_requests(ids[paid:], "pending")
    sim.create_requests(ids[:paid], "paid")
    from kraken.pay import normalize_external_id

    return [normalize_external_id(value) for value in ids]


def split_ids(ids: list[str], share: float) -> tuple[list[str], list[str]]:
    """(ids for one ``cancel_request`` each, ids for one ``bulk_cancel``), already paid ones
    spread over both."""
    every = max(1, round(1 / share)) if share > 0 else 0
    if not every:
        return ids, []
    by_bulk = ids[every - 1 :: every]
    chosen = set(by_bulk)
    return [eid for eid in ids if eid not in chosen], by_bulk


@dataclass
class Tally:
    """What the task results and the bulk summary say."""

    sent: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    task_results: int = 0  # cancel_request results received
    by_task: int = 0  # of which cancelled
    confirmed_on_retry: int = 0
    failures: Counter[str] = field(default_factory=Counter)  # error class -> ids
    bulk_done: int = 0  # ids of finished bulk chunks
    handed_off: int = 0  # ids a bulk chunk gave to cancel_request to retry durably
    unfinished: int = 0
    seconds: float = 0.0

    @property
    def done(self) -> int:
        return self.task_results + self.bulk_done

    def add(self, value: Any) -> None:
        """One ``cancel_request`` result (a dict) or failure (an exception)."""
        self.task_results += 1
        if isinstance(value, BaseException):
            self.failures[type(value).__name__] += 1
            return
        self.outcomes[value["outcome"]] += 1
        self.by_task += value["outcome"] == "cancelled"
        self.confirmed_on_retry += bool(value.get("confirmed_on_retry"))

    def add_bulk(self, summary: dict[str, Any]) -> None:
        """The bulk summary: outcomes, failures (``"Class: message"``), hand-offs."""
        self.outcomes.update({k: v for k, v in summary["outcomes"].items() if v})
        for failure in summary["failed"]:
            self.failures[failure["error"].split(":", 1)[0]] += 1
        self.handed_off = summary["handed_off"]


def _cancel_all(
    by_task: list[str],
    by_bulk: list[str],
    timeout: float,
    nodes: list[_Node],
    sim: SimulatorThread,
    say: _Printer,
) -> Tally:
    """Queue one ``cancel_request`` per id of ``by_task`` and one ``bulk_cancel`` of
    ``by_bulk``; collect the results as they arrive, then wait for what the bulk handed off."""
    from celery.exceptions import TimeoutError as CeleryTimeout
    from celery.result import ResultSet

    from tasks import bulk_cancel, cancel_request

    tally = Tally(sent=len(by_task) + len(by_bulk))
    deadline = time.monotonic() + timeout
    started = time.monotonic()
    results = ResultSet([cancel_request.delay(eid) for eid in by_task])
    bulk = bulk_cancel.delay(by_bulk) if by_bulk else None
    chunks = list(getattr(getattr(bulk, "parent", None), "results", None) or [])
    finished: set[str] = set()

    def on_interval() -> None:
        _check_alive(nodes)
        _count_chunks(chunks, finished, tally)
        say.progress(tally)

    try:
        for _, meta in results.iter_native(timeout=timeout, interval=0.1, on_interval=on_interval):
            tally.add(meta["result"])
            say.progress(tally)
        while bulk is not None and not bulk.ready():
            on_interval()
            if time.monotonic() > deadline:
                raise CeleryTimeout
            time.sleep(0.1)
        if bulk is not None:
            tally.bulk_done = len(by_bulk)
            tally.add_bulk(bulk.get(timeout=5))
        _wait_for_hand_offs(sim, tally, deadline)
    except CeleryTimeout:
        tally.unfinished = tally.sent - tally.done
    tally.seconds = time.monotonic() - started
    say.progress(tally, final=True)
    return tally


def _count_chunks(chunks: list[Any], finished: set[str], tally: Tally) -> None:
    for chunk in chunks:
        if chunk.id not in finished and chunk.successful():
            finished.add(chunk.id)
            tally.bulk_done += int(chunk.result.get("total", 0))


def _wait_for_hand_offs(sim: SimulatorThread, tally: Tally, deadline: float) -> None:
    """Ids a chunk handed to ``cancel_request`` have no result here: the simulator tells when
    no request is left pending."""
    from celery.exceptions import TimeoutError as CeleryTimeout

    while tally.handed_off and sim.summary()["by_state"].get("pending", 0):
        if time.monotonic() > deadline:
            raise CeleryTimeout
        time.sleep(0.1)


def _check_alive(nodes: list[_Node]) -> None:
    for node in nodes:
        if node.proc.poll() is not None:
            raise DemoError(f"worker {node.name} exited: {_last_line(node.log())}")


# ----------------------------------------------------------------------------- the report


@dataclass
class Report:
    tally: Tally
    stats: dict[str, Any]
    summary: dict[str, Any]
    metrics: MetricsFigures | None = None
    confirmed: int | None = None  # cancellations Kraken's notifications confirmed

    def rows(self) -> list[tuple[str, str]]:
        t, stats = self.tally, self.stats
        cancelled = self.summary["by_state"].get("cancelled", 0)  # hand-offs included
        rows = [("cancelled", str(cancelled))]
        rows.append(("  by cancel_request.delay()", str(t.by_task)))
        if t.confirmed_on_retry:
            rows.append(("    confirmed on retry", str(t.confirmed_on_retry)))
        by_bulk = f"{cancelled - t.by_task}"
        if t.handed_off:
            by_bulk += f" ({t.handed_off} handed to cancel_request)"
        rows.append(("  by bulk_cancel", by_bulk))
        if self.confirmed is not None:
            rows.append(("confirmed by Kraken", f"{self.confirmed} of {cancelled} by webhook"))
        for outcome in ("already_cancelled", "not_cancellable", "not_found"):
            if t.outcomes[outcome]:
                rows.append((outcome.replace("_", " "), str(t.outcomes[outcome])))
        rows.append(("failed", str(sum(t.failures.values()))))
        for error, count in t.failures.most_common():
            rows.append((f"  {error}", str(count)))
        if t.unfinished:
            rows.append(("unfinished", str(t.unfinished)))
        met = self.faults_met()
        rows.append(("retried", f"{sum(met.values())} of {stats['requests']} Kraken calls"))
        for error, count in met.most_common():
            rows.append((f"  {error}", str(count)))
        if t.failures:
            rows.append(("  (the last call of a failed task was not)", ""))
        rows.append(("nonce rejections", str(stats["nonce_rejections"])))
        rows.append(("throughput", f"{t.done / t.seconds:.0f} cancels/s" if t.seconds else "-"))
        return rows

    def faults_met(self) -> Counter[str]:
        """Failed calls by the error class the client saw: the simulator's own count of the
        faults it injected (it sees every call, those of tasks and of bulk chunks alike)."""
        met: Counter[str] = Counter()
        for kind, count in self.stats["faults_injected"].items():
            if count:
                met[FAULT_ERRORS.get(kind, kind)] += count
        return met

    def problems(self) -> list[str]:
        t, by_state = self.tally, self.summary["by_state"]
        found = []
        if t.failures:
            found.append(f"{sum(t.failures.values())} cancellation(s) failed")
        if t.unfinished:
            found.append(f"{t.unfinished} cancellation(s) did not finish in time")
        cancelled = by_state.get("cancelled", 0)
        if self.confirmed is not None and self.confirmed < cancelled:
            found.append(f"{cancelled - self.confirmed} cancellation(s) not confirmed by Kraken")
        if by_state.get("pending", 0):
            found.append(f"{by_state['pending']} payment request(s) still pending")
        if self.stats["nonce_rejections"]:
            found.append(f"{self.stats['nonce_rejections']} nonce(s) rejected by Kraken")
        if self.metrics is not None and self.metrics.calls != self.stats["requests"]:
            found.append(
                f"/metrics counted {self.metrics.calls:.0f} Kraken calls, the simulator "
                f"{self.stats['requests']}"
            )
        return found


class _Printer:
    """Lines for the person watching; a progress line redrawn in place on a terminal."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.tty = out.isatty()
        self._last_step = -1
        self._last_line = ""

    def __call__(self, line: str) -> None:
        print(line, file=self.out, flush=True)

    def progress(self, tally: Tally, final: bool = False) -> None:
        failed = sum(tally.failures.values())
        line = f"cancelling   {tally.done}/{tally.sent} done, {failed} failed"
        if self.tty:
            print(f"\r{line}", end="\n" if final else "", file=self.out, flush=True)
            return
        step = tally.done * 4 // max(1, tally.sent)  # a line at each quarter when not a tty
        if (step != self._last_step or final) and line != self._last_line:
            self._last_step, self._last_line = step, line
            self(line)

    def table(self, rows: list[tuple[str, str]]) -> None:
        width = max(len(label) for label, _ in rows)
        self("")
        for label, value in rows:
            self(f"  {label:<{width}}  {value}")
        self("")

    def tail_of_logs(self, nodes: list[_Node], lines: int = 5) -> None:
        for node in nodes:
            tail = [line for line in node.log().splitlines() if "ERROR" in line][-lines:]
            for line in tail:
                self(f"  {node.name}: {line.strip()}")


def _ignore_signals() -> None:
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)
