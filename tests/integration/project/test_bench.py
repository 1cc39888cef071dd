"""The benchmarks stay runnable: each script imports what it measures and parses its options."""

from __future__ import annotations

import subprocess
import sys

import pytest
from tasks_support import REPO

BENCH = REPO / "bench"


@pytest.mark.parametrize(
    "script",
    [
        "client.py",
        "tasks.py",
        "bulk.py",
        "webhooks.py",
        "sharing.py",
        "late.py",
        "peers.py",
        "redis_parser.py",
        "soak.py",
    ],
)
def test_benchmark_script_starts(script):
    done = subprocess.run(
        [sys.executable, str(BENCH / script), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "usage:" in done.stdout
