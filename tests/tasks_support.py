"""Helpers for the tests that run real Celery workers: start, wait, kill, point the app.

Workers and beat are :mod:`kraken_pay_cli.local`'s (the demo's and the benchmarks' too):
``celery -A tasks worker`` subprocesses in their own process group (so a test can SIGKILL a
whole node), each logging to a file the tests can read afterwards. The Redis databases are
:mod:`kraken_pay_cli.local.databases`'s.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from celery import Celery

from kraken.pay.simulator import DEMO_API_KEY, DEMO_API_SECRET
from kraken_pay_cli.local import (
    CELERY,
    Beat,
    CeleryNode,
    Worker,
    clean_environ,
    databases,
    redis_db,
    worker_env,
    workers,
)
from tasks.settings import forget

__all__ = ["CELERY", "Beat", "Worker", "redis_db", "worker_env", "workers"]

REPO = Path(__file__).resolve().parent.parent
RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672//"

# Distinct databases on the test Redis, so that a test that flushes its own (db 15 by
# default) never removes the broker's queues and bindings from under a running worker.
TASKS_DB = databases.TEST_TASKS  # nonces and ordering locks of the workers
BROKER_DB = databases.TEST_BROKER  # Celery's broker and result backend


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


# ---------------------------------------------------------------- the example projects

DRIVER = Path(__file__).parent / "integration" / "hosts" / "driver.py"
PROJECT_BROKER_DB = databases.TEST_PROJECT_BROKER
PROJECT_BACKEND_DB = databases.TEST_PROJECT_BACKEND
LIBRARY_DB = databases.TEST_PROJECT_LIBRARY


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


class Node(CeleryNode):
    """``celery -A <project> worker|beat`` in its own process group, started at once."""

    def __init__(self, project: Project, env: dict[str, str], log_dir: Path, *args: str) -> None:
        self.name = unique(args[0])
        extra = []
        if args[0] == "worker":
            extra = ["-n", f"{self.name}@tests", "--without-gossip", "--without-mingle"]
        command = [*args, "--loglevel", "INFO", *extra]
        log_path = log_dir / f"{self.name}.log"
        super().__init__(env, log_path, command, app=project.celery_app, cwd=project.directory)
        self.start()


def project_env(sim_url: str, redis_url: str, data: Path, **overrides: str) -> dict[str, str]:
    """An example project's environment: its own settings only (SHOP_*), nothing of the
    library's key; its broker, result backend and the library's Redis are flushed."""
    base = {k: v for k, v in clean_environ().items() if not k.startswith(("SHOP_", "DJANGO_"))}
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
