"""``kraken-pay cancel --wait`` with a django-db result backend: Django is set up first."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from command_support import KRAKEN_PAY, clean_env, run
from tasks_support import Worker, wait_for

from kraken.pay import normalize_external_id

pytest.importorskip("django_celery_results")  # in the test extra; absent only outside it

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


def test_cancel_wait_reads_outcomes_from_a_django_db_backend(
    django_env, sim, environment, queue, log_dir
):
    env = environment | django_env | {"CELERY_RESULT_BACKEND": "django-db", "KRAKEN_QUEUE": queue}
    eid = normalize_external_id(uuid.uuid4())
    sim.create_requests([eid])
    node = Worker(env, queue, log_dir).start()
    try:
        wait_for(lambda: " ready." in node.log(), 60, f"the worker:\n{node.log()}")
        completed = run([KRAKEN_PAY, "cancel", "--wait", "--timeout", "30", eid], env)
    finally:
        node.stop()
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert completed.stdout.split()[:2] == [eid, "cancelled"]
    assert "Traceback" not in completed.stderr


def test_a_django_db_backend_without_django_settings_is_one_line(redis_url):
    env = clean_env(REDIS_URL=redis_url, CELERY_RESULT_BACKEND="django-db")
    env.pop("DJANGO_SETTINGS_MODULE", None)
    completed = run([KRAKEN_PAY, "cancel", "--wait", "AAAAAAAAAAE"], env)
    assert completed.returncode == 3
    assert completed.stderr.strip() == (
        "kraken-pay: CELERY_RESULT_BACKEND: django-db needs DJANGO_SETTINGS_MODULE (the Django "
        "project whose database holds the results)"
    )
