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


def test_the_cpu_breakdown_reads_each_roles_seconds_and_divides_per_task():
    import collections
    import importlib.util
    import os

    spec = importlib.util.spec_from_file_location("bench_cpu", BENCH / "_cpu.py")
    cpu = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cpu)
    assert cpu.available()
    roles = cpu.Roles()
    roles.add("this process", lambda: [os.getpid()])
    roles.add("gone", lambda: [2**22 + 1])  # no such pid: counts nothing, raises nothing

    def burn() -> str:  # 50 ms of CPU
        deadline = cpu.own_seconds() + 0.05
        while cpu.own_seconds() < deadline:
            pass
        return "done"

    seconds = collections.Counter()
    assert roles.spent_during(burn, seconds) == "done"
    spent = cpu.per_task_us(seconds, tasks=10)
    assert spent["publisher"] >= 4_000  # 50 ms over 10 tasks
    assert spent["this process"] >= 2_000  # /proc counts in clock ticks (10 ms)
    assert spent["gone"] == 0
    assert spent["total"] == sum(v for k, v in spent.items() if k != "total")
