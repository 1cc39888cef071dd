"""Helpers for the tests that run real Celery workers: start, wait, kill, point the app.

Workers are ``celery -A tasks worker`` subprocesses in their own process group (so a test
can SIGKILL a whole node), each logging to a file the tests can read afterwards.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from celery import Celery

from kraken.pay.simulator import DEMO_API_KEY, DEMO_API_SECRET
from tasks.embedded import redis_db
from tasks.settings import forget

CELERY = str(Path(sys.executable).with_name("celery"))
REPO = Path(__file__).resolve().parent.parent
RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672//"

# Distinct databases on the test Redis, so that a test that flushes its own (db 15 by
# default) never removes the broker's queues and bindings from under a running worker.
TASKS_DB = 12  # nonces and ordering locks of the workers
BROKER_DB = 13  # Celery's broker and result backend


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def wait_for(
    predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.05
) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail with ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


def worker_env(
    *,
    sim_url: str,
    redis_url: str,
    broker_url: str,
    backend_url: str | None = None,
    **overrides: str,
) -> dict[str, str]:
    """A worker's environment: the simulator's demo key, quick retries, short timeouts."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("KRAKEN_", "CELERY_")) and key != "REDIS_URL"
    }
    env.update(
        {
            "KRAKEN_API_KEY": DEMO_API_KEY,
            "KRAKEN_API_SECRET": DEMO_API_SECRET,
            "KRAKEN_API_URL": sim_url,
            "REDIS_URL": redis_url,
            "CELERY_BROKER_URL": broker_url,
            "CELERY_RESULT_BACKEND": backend_url or broker_url,
            "KRAKEN_TIMEOUT": "1",
            "KRAKEN_RETRY_BASE_DELAY": "0.01",
            "KRAKEN_RETRY_MAX_DELAY": "0.5",
            "KRAKEN_RETRY_MAX_ATTEMPTS": "20",
            "CELERY_VISIBILITY_TIMEOUT": "60",
            # No shared rate budget: these tests send far more than Kraken's Starter tier
            # allows, to a simulator that has no rate limit unless a test injects one.
            "KRAKEN_RATE_PER_SECOND": "off",
            # A short late-landing grace: timed-out calls in these tests are meant to be quick.
            "KRAKEN_LATE_LANDING_GRACE": "1",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(overrides)
    return env


class Worker:
    """One ``celery worker`` node (main process and pool) in its own process group."""

    def __init__(
        self,
        env: Mapping[str, str],
        queue: str,
        log_dir: Path,
        *,
        pool: str = "prefork",
        concurrency: int = 2,
        name: str | None = None,
    ) -> None:
        self.env = dict(env)
        self.queue = queue
        self.pool = pool
        self.concurrency = concurrency
        self.name = name or unique("w")
        self.log_path = log_dir / f"{self.name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def hostname(self) -> str:
        return f"{self.name}@tests"

    def start(self) -> Worker:
        # The library's tasks go to KRAKEN_QUEUE: this node's own queue, for isolation.
        self.env.setdefault("KRAKEN_QUEUE", self.queue)
        command = [
            CELERY,
            "-A",
            "tasks",
            "worker",
            "--pool",
            self.pool,
            "--concurrency",
            str(self.concurrency),
            "-Q",
            self.queue,
            "-n",
            self.hostname,
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "--loglevel",
            "INFO",
        ]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                command,
                env=self.env,
                cwd=REPO,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a process group of its own: kill the whole node
            )
        return self

    def wait_ready(self, app: Celery, timeout: float = 30.0) -> Worker:
        """Return once this worker has run a no-op task from its queue."""
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive()
            result = app.send_task("kraken_pay.noop", queue=self.queue)
            try:
                result.get(timeout=min(2.0, max(0.1, deadline - time.monotonic())))
                return self
            except Exception:
                if time.monotonic() > deadline:
                    raise AssertionError(
                        f"worker {self.name} not ready in {timeout:g}s:\n{self.log()[-3000:]}"
                    ) from None
            finally:
                result.forget()

    def check_alive(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            raise AssertionError(f"worker {self.name} exited:\n{self.log()[-3000:]}")

    def pool_pids(self) -> list[int]:
        """The pids of this node's pool processes (children of the main process)."""
        assert self.proc is not None
        path = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        return [int(pid) for pid in path.read_text().split()]

    def kill_node(self) -> None:
        """SIGKILL the main process and its pool at once, as a lost host would."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout: float = 15.0) -> None:
        """A warm shutdown; SIGKILL if it takes too long. Always reaps the whole group."""
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # pool children that outlived their parent
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""


@contextlib.contextmanager
def workers(*nodes: Worker) -> Iterator[tuple[Worker, ...]]:
    try:
        for node in nodes:
            node.start()
        yield nodes
    finally:
        for node in nodes:
            node.stop()


def _drop_connections(app: Celery) -> None:
    """Forget the app's broker pools and result backend, so new settings take effect."""
    app._pool = None
    amqp = app.__dict__.pop("amqp", None)
    if amqp is not None:
        amqp._producer_pool = None
    app._backend_cache = None
    app._local = threading.local()


@contextlib.contextmanager
def client_app(app: Celery, **conf: Any) -> Iterator[Celery]:
    """Point an app at a test broker and backend for a while; ``task_default_queue`` also
    becomes the library's queue (the ``kraken_pay`` setting ``queue``)."""
    if "task_default_queue" in conf:
        conf.setdefault("kraken_pay", {"queue": conf["task_default_queue"]})
    saved = {key: app.conf.get(key) for key in conf}
    app.conf.update(conf)
    _drop_connections(app)
    forget(app)
    try:
        yield app
    finally:
        app.conf.update(saved)
        _drop_connections(app)
        forget(app)


class Beat:
    """``celery -A tasks beat`` in its own process group, with its own schedule file."""

    def __init__(self, env: dict[str, str], schedule_file: Path, log_path: Path) -> None:
        self.env = env
        self.schedule_file = schedule_file
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Beat:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [CELERY, "-A", "tasks", "beat", "-s", str(self.schedule_file), "-l", "INFO"],
                env=self.env,
                cwd=REPO,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def wait_ticking(self, timeout: float = 30.0) -> Beat:
        """Return once beat has sent its first ``dispatch_due``."""
        wait_for(lambda: "Sending due task" in self.log(), timeout, "beat's first tick")
        return self

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def kill(self) -> None:
        """SIGKILL: no shutdown handler runs, as when a host dies."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


# ---------------------------------------------------------------- the example projects

DRIVER = Path(__file__).parent / "integration" / "hosts" / "driver.py"
PROJECT_BROKER_DB, PROJECT_BACKEND_DB, LIBRARY_DB = 10, 11, 9


@dataclass(frozen=True)
class Project:
    kind: str  # the driver's name for it
    directory: Path
    celery_app: str  # what -A names


PROJECTS = {
    "django": Project("django", REPO / "examples" / "django_app", "shop"),
    "flask": Project("flask", REPO / "examples" / "flask_app", "make_celery"),
}


def drive(
    project: Project, env: dict[str, str], *args: str, expect_status: int = 0, **overrides: str
) -> Any:
    """Run the project's web side once; its JSON answer (``None`` if it printed none)."""
    done = subprocess.run(
        [sys.executable, str(DRIVER), project.kind, *args],
        cwd=project.directory,
        env=env | overrides,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == expect_status, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    return json.loads(lines[-1]) if lines else None


class Node:
    """``celery -A <project> worker|beat`` in its own process group, logging to a file."""

    def __init__(self, project: Project, env: dict[str, str], log_dir: Path, *args: str) -> None:
        self.name = unique(args[0])
        self.log_path = log_dir / f"{self.name}.log"
        command = [CELERY, "-A", project.celery_app, *args, "--loglevel", "INFO"]
        if args[0] == "worker":
            command += ["-n", f"{self.name}@tests", "--without-gossip", "--without-mingle"]
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                command,
                cwd=project.directory,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def pool_pids(self) -> list[int]:
        path = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        return [int(pid) for pid in path.read_text().split()]

    def stop(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, sig)
                try:
                    self.proc.wait(15)
                except subprocess.TimeoutExpired:
                    continue
        if self.proc.poll() is None:
            self.proc.wait(10)


def project_env(sim_url: str, redis_url: str, data: Path, **overrides: str) -> dict[str, str]:
    """An example project's environment: its own settings only (SHOP_*), nothing of the
    library's key; its broker, result backend and the library's Redis are flushed."""
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("KRAKEN_", "CELERY_", "SHOP_", "DJANGO_")) and k != "REDIS_URL"
    }
    for db in (PROJECT_BROKER_DB, PROJECT_BACKEND_DB, LIBRARY_DB):
        redis.Redis.from_url(redis_db(redis_url, db)).flushdb()
    return (
        base
        | {
            "SHOP_BROKER_URL": redis_db(redis_url, PROJECT_BROKER_DB),
            "SHOP_RESULT_BACKEND": redis_db(redis_url, PROJECT_BACKEND_DB),
            "SHOP_REDIS_URL": redis_db(redis_url, LIBRARY_DB),
            "SHOP_KRAKEN_API_KEY": DEMO_API_KEY,
            "SHOP_KRAKEN_API_SECRET": DEMO_API_SECRET,
            "SHOP_KRAKEN_API_URL": sim_url,
            "SHOP_SIMULATOR_URL": sim_url,
            "SHOP_DATABASE": str(data / "shop.sqlite3"),
            "SHOP_PAYMENT_EXPIRY": "1800",
            # Tuning the project left out falls back to the library's variables, key by key.
            "KRAKEN_TIMEOUT": "5",
            "KRAKEN_RETRY_BASE_DELAY": "0.01",
            "KRAKEN_RETRY_MAX_DELAY": "0.5",
            "KRAKEN_RATE_PER_SECOND": "off",
            "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": str(REPO),
        }
        | overrides
    )
