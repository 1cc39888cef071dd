"""The benchmarks stay runnable: each script imports what it measures and parses its options."""

from __future__ import annotations

import subprocess
import sys

import pytest
from tasks_support import REPO

from kraken_pay_cli.local import databases

BENCH = REPO / "bench"
SCRIPTS = [
    "client.py",
    "end_to_end.py",
    "bulk.py",
    "webhooks.py",
    "sharing.py",
    "late.py",
    "peers.py",
    "redis_parser.py",
    "soak.py",
]


@pytest.mark.parametrize("script", SCRIPTS)
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


def test_every_benchmark_is_listed_and_none_edits_the_import_path():
    scripts = {path.name for path in BENCH.glob("*.py") if not path.name.startswith("_")}
    assert scripts == set(SCRIPTS)
    for path in BENCH.glob("*.py"):
        assert "sys.path" not in path.read_text(), path.name


def test_the_benchmarks_and_the_demo_keep_off_the_databases_the_tests_flush():
    theirs = {databases.BENCH, databases.BENCH_BROKER, *databases.DEMO}
    assert not theirs & set(databases.TESTS)
    assert databases.BENCH != databases.BENCH_BROKER
    assert not {databases.BENCH, databases.BENCH_BROKER} & set(databases.DEMO)
    assert 0 not in theirs  # the library's default REDIS_URL: the user's own data
    tests = [getattr(databases, name) for name in dir(databases) if name.startswith("TEST_")]
    assert all(db in databases.TESTS for db in tests)
