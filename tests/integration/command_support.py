"""The project's commands in fresh processes, as a user runs them: ``kraken-pay``, a
``celery worker`` that must refuse to start, any other argv; each in an environment without
this process's own Kraken, Celery and Redis settings, so that only what a test sets counts."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from tasks_support import CELERY, REPO

from kraken_pay_cli.local import clean_environ

KRAKEN_PAY = str(Path(sys.executable).with_name("kraken-pay"))
NO_REDIS = "redis://127.0.0.1:1/0"  # nothing listens on port 1 of loopback
NO_API = "http://127.0.0.1:1"


def clean_env(**variables: str) -> dict[str, str]:
    """This process's environment less every KRAKEN_*, CELERY_*, REDIS_URL and Django
    setting (``kraken_pay_cli.local``'s rule, the demo's and the workers'), plus these."""
    return clean_environ() | variables


def run(
    argv: list[str], env: Mapping[str, str], *, timeout: float = 60, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """``argv`` run to its end from the repository's root, its output kept as text."""
    return subprocess.run(
        argv,
        cwd=REPO,
        env=dict(env),
        input=stdin,
        stdin=subprocess.DEVNULL if stdin is None else None,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def kraken_pay(
    *args: str, timeout: float = 60, stdin: str | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    """The console script, with no Kraken API reachable unless ``KRAKEN_API_URL`` says so."""
    environment = clean_env(**({"KRAKEN_API_URL": NO_API} | env))
    return run([KRAKEN_PAY, *args], environment, timeout=timeout, stdin=stdin)


def celery_worker(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``celery -A tasks worker --pool solo``, for a test that expects it to refuse to start
    (it runs until it exits); no Redis answers unless ``REDIS_URL`` says so."""
    argv = [CELERY, "-A", "tasks", "worker", "--pool", "solo", *args]
    return run(argv, clean_env(**({"REDIS_URL": NO_REDIS} | env)))


def refusal(completed: subprocess.CompletedProcess[str]) -> str:
    """The one line in which a worker said why it did not start."""
    lines = [line for line in completed.stderr.splitlines() if "celery worker not started" in line]
    assert len(lines) == 1, completed.stderr
    return lines[0]


def one_error_line(completed: subprocess.CompletedProcess[str]) -> str:
    """The command's only line on stderr, which holds no traceback."""
    assert "Traceback" not in completed.stderr
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1, completed.stderr
    return lines[0]
