"""``kraken-pay cancel --wait`` with a django-db result backend: Django is set up first."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from tasks_support import BROKER_DB, REPO, TASKS_DB, Worker, redis_db, unique, wait_for
from tasks_support import worker_env as base_env

from kraken.pay import normalize_external_id
from kraken.pay.simulator import SimulatorThread

pytest.importorskip("django_celery_results")  # in the test extra; absent only outside it

KRAKEN_PAY = str(Path(sys.executable).with_name("kraken-pay"))
SETTINGS = """
SECRET_KEY = "tests"
INSTALLED_APPS = ["django_celery_results"]
DATABASES = {{"default": {{"ENGINE": "django.db.backends.sqlite3", "NAME": {db!r}}}}}
USE_TZ = True
"""


@pytest.fixture
def django_env(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "results_site.py").write_text(SETTINGS.format(db=str(tmp_path / "db.sqlite3")))
    env = {
        "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]),
        "DJANGO_SETTINGS_MODULE": "results_site",
        "CELERY_RESULT_BACKEND": "django-db",
    }
    migrate = [sys.executable, "-m", "django", "migrate", "-v0"]
    subprocess.run(migrate, env=os.environ | env, check=True, timeout=120)
    return env


@pytest.mark.slow
def test_cancel_wait_reads_outcomes_from_a_django_db_backend(django_env, redis_url, tmp_path):
    queue = unique("q-django-results")
    with SimulatorThread() as sim:
        env = base_env(
            sim_url=sim.url,
            redis_url=redis_db(redis_url, TASKS_DB),
            broker_url=redis_db(redis_url, BROKER_DB),
        )
        env |= django_env | {"CELERY_RESULT_BACKEND": "django-db", "KRAKEN_QUEUE": queue}
        eid = normalize_external_id(uuid.uuid4())
        sim.create_requests([eid])
        node = Worker(env, queue, tmp_path).start()
        try:
            wait_for(lambda: " ready." in node.log(), 60, f"the worker:\n{node.log()}")
            completed = subprocess.run(
                [KRAKEN_PAY, "cancel", "--wait", "--timeout", "30", eid],
                cwd=REPO,
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
            )
        finally:
            node.stop()
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert completed.stdout.split()[:2] == [eid, "cancelled"]
    assert "Traceback" not in completed.stderr


def test_a_django_db_backend_without_django_settings_is_one_line(redis_url):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KRAKEN_", "CELERY_"))}
    env |= {"REDIS_URL": redis_url, "CELERY_RESULT_BACKEND": "django-db"}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    completed = subprocess.run(
        [KRAKEN_PAY, "cancel", "--wait", "AAAAAAAAAAE"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert completed.returncode == 3
    assert completed.stderr.strip() == (
        "kraken-pay: CELERY_RESULT_BACKEND: django-db needs DJANGO_SETTINGS_MODULE (the Django "
        "project whose database holds the results)"
    )
