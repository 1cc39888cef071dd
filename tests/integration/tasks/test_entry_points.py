"""Every entry point, in a fresh process, with a malformed setting: one line, no traceback,
the right exit status, and never the value itself (it may be a secret in the wrong place)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from command_support import KRAKEN_PAY, NO_REDIS, celery_worker, clean_env, run
from tasks_support import CELERY, REPO

from kraken.pay.simulator import DEMO_API_KEY, DEMO_API_SECRET

LEAKED = "hunter2-SECRET-in-the-wrong-place"
EID = "AAAAAAAAAAAAAAAAAAAAAQ"
EX_CONFIG, EXIT_CONFIG = 78, 3
DEMO_KEY = {"KRAKEN_API_KEY": DEMO_API_KEY, "KRAKEN_API_SECRET": DEMO_API_SECRET}


def environment(**settings: str) -> dict[str, str]:
    """The demo key, no Redis, the repository importable (for ``python -c``), and these."""
    return clean_env(**(DEMO_KEY | {"REDIS_URL": NO_REDIS, "PYTHONPATH": str(REPO)} | settings))


def _without_root_warning(stderr: str) -> str:
    """Celery warns, in six lines, when a worker runs as root (as CI does here)."""
    return stderr.rpartition("_warn_or_raise_security_error(egid, euid, gid, uid,")[2]


def assert_one_clean_line(done: subprocess.CompletedProcess[str], status: int, name: str):
    output = done.stdout + done.stderr
    assert done.returncode == status, output
    assert "Traceback" not in output
    assert LEAKED not in output
    errors = [line for line in _without_root_warning(done.stderr).splitlines() if line.strip()]
    assert len(errors) == 1, done.stderr
    assert name in errors[0]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("KRAKEN_TIMEOUT", LEAKED),
        ("KRAKEN_TIMEOUT", "1e-320"),
        ("KRAKEN_BULK_CHUNK", "99999"),
        ("KRAKEN_API_URL", LEAKED),
        ("KRAKEN_API_URL", "ftp://api.kraken.com"),
        ("KRAKEN_API_KEY", "key\r\nX-Injected: 1"),
        ("KRAKEN_RATE_PER_SECOND", "1e-300"),
        ("KRAKEN_SCHEDULE_INTERVAL", "1e-9"),
        ("KRAKEN_PAY_SWEEP", "shop_that_is_not_there.sweeps:abandoned"),
    ],
)
def test_the_standalone_worker_refuses_in_one_line(name, value):
    done = celery_worker(**environment(**{name: value}))
    assert_one_clean_line(done, EX_CONFIG, name)


def test_the_standalone_beat_refuses_a_bad_interval_in_one_line(tmp_path):
    beat = [CELERY, "-A", "tasks", "beat", "-s", str(tmp_path / "schedule")]
    done = run(beat, environment(KRAKEN_SCHEDULE_INTERVAL=LEAKED))
    assert_one_clean_line(done, EX_CONFIG, "KRAKEN_SCHEDULE_INTERVAL")


WEB = """
import subprocess
import sys
from tasks import cancel_request, schedule_cancel
from kraken.pay.errors import ConfigurationError
try:
    cancel_request.delay({eid!r})
except ConfigurationError as exc:
    print(exc, file=sys.stderr)
    sys.exit(3)
"""


def test_a_web_process_imports_the_tasks_and_learns_of_the_bad_value_at_its_first_call():
    done = run([sys.executable, "-c", WEB.format(eid=EID)], environment(KRAKEN_BULK_CHUNK="99999"))
    assert_one_clean_line(done, 3, "KRAKEN_BULK_CHUNK")


@pytest.mark.parametrize(
    "args",
    [
        ["check"],
        ["cancel", EID],
        ["cancel", "--direct", EID],
        ["schedule", EID, "--in", "1h"],
        ["unschedule", EID],
        ["scheduled"],
    ],
    ids=lambda args: " ".join(args[:2]),
)
def test_every_command_refuses_a_bad_setting_in_one_line_with_status_3(args):
    done = run([KRAKEN_PAY, *args], environment(KRAKEN_TIMEOUT=LEAKED))
    output = done.stdout + done.stderr
    assert done.returncode == EXIT_CONFIG, output
    assert "Traceback" not in output
    assert LEAKED not in output
    assert "KRAKEN_TIMEOUT" in output


def test_bulk_cancel_refuses_a_bad_setting_in_one_line_with_status_3(tmp_path):
    ids = tmp_path / "ids.txt"
    ids.write_text(f"{EID}\n")
    done = run([KRAKEN_PAY, "bulk-cancel", str(ids)], environment(KRAKEN_BULK_CHUNK=LEAKED))
    assert_one_clean_line(done, EXIT_CONFIG, "KRAKEN_BULK_CHUNK")
