"""Metrics: a prefork worker serves the sum over its pool processes, equal to what the
simulator counted; nothing is imported or created before it is used."""

from __future__ import annotations

import socket
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from tasks_support import (
    BROKER_DB,
    REPO,
    TASKS_DB,
    Worker,
    client_app,
    redis_db,
    unique,
    wait_for,
    worker_env,
    workers,
)

from kraken.pay import normalize_external_id
from kraken.pay.simulator import DEMO_API_KEY, DEMO_API_SECRET, SimulatorThread
from tasks import bulk_cancel, cancel_request, metrics
from tasks.celery import app

RESULT_TIMEOUT = 60


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """``{(sample name, labels): value}`` from a worker's /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def total(samples: dict, name: str, **labels: str) -> float:
    """The sum of the samples ``name`` whose labels include ``labels``."""
    return sum(
        value
        for (sample, sample_labels), value in samples.items()
        if sample == name and set(labels.items()) <= set(sample_labels)
    )


# ----------------------------------------------------------------------------- unit


def test_importing_tasks_imports_no_prometheus_client_and_creates_no_metric():
    code = (
        "import sys, tasks, tasks.metrics, tasks.cancel, tasks.bulk\n"
        "assert 'prometheus_client' not in sys.modules, 'imported at import time'\n"
        "assert tasks.metrics._metrics is None\n"
    )
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert completed.returncode == 0, completed.stderr


def test_the_ledger_gauges_come_from_the_registered_source_at_each_scrape():
    collector = metrics._LedgerCollector()
    assert list(collector.collect()) == []  # no ledger yet: no gauges
    entries = iter([(3, 42.5), (0, 0.0)])
    metrics.set_ledger_source(lambda: next(entries))
    try:
        first = {f.name: f.samples[0].value for f in collector.collect()}
        second = {f.name: f.samples[0].value for f in collector.collect()}
    finally:
        metrics.set_ledger_source(None)
    assert first == {
        "kraken_pay_ledger_open_entries": 3,
        "kraken_pay_ledger_oldest_open_seconds": 42.5,
    }
    assert second["kraken_pay_ledger_open_entries"] == 0


def test_a_failing_ledger_source_drops_only_its_gauges():
    def broken() -> tuple[int, float]:
        raise ConnectionError("ledger store down")

    metrics.set_ledger_source(broken)
    try:
        assert list(metrics._LedgerCollector().collect()) == []
    finally:
        metrics.set_ledger_source(None)


# ----------------------------------------------------------------------------- a real worker


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatorThread]:
    with SimulatorThread(keys={DEMO_API_KEY: DEMO_API_SECRET}, nonce_window=0) as simulator:
        yield simulator


@pytest.fixture(scope="module")
def queue() -> str:
    return unique("q-metrics")


@pytest.fixture(scope="module")
def client(redis_url: str, queue: str):
    broker = redis_db(redis_url, BROKER_DB)
    with client_app(app, broker_url=broker, result_backend=broker, task_default_queue=queue) as c:
        yield c


@pytest.mark.slow
def test_a_prefork_worker_serves_what_the_simulator_counted(
    sim, client, queue, redis_url, tmp_path
):
    port = free_port()
    multiproc = tmp_path / "prometheus"
    multiproc.mkdir()
    (multiproc / "counter_1.db").write_bytes(b"a stale file of an earlier run")
    env = worker_env(
        sim_url=sim.url,
        redis_url=redis_db(redis_url, TASKS_DB),
        broker_url=redis_db(redis_url, BROKER_DB),
        KRAKEN_PAY_METRICS_PORT=str(port),
        PROMETHEUS_MULTIPROC_DIR=str(multiproc),
    )
    ids = [normalize_external_id(uuid.uuid4()) for _ in range(30)]
    sim.create_requests(ids[:27])
    sim.create_requests(ids[27:], "paid")
    by_task, by_bulk = ids[::2], ids[1::2]
    with workers(Worker(env, queue, tmp_path, concurrency=2)) as (node,):
        node.wait_ready(client)
        before = sim.stats()
        sim.set_faults(
            {
                "reset_before": {"next": 2},
                "reset_after": {"next": 2},
                "http_5xx": {"next": 2},
                "malformed_json": {"next": 1},
                "service_unavailable": {"next": 2},
            }
        )
        results = [cancel_request.delay(eid) for eid in by_task]
        summary = bulk_cancel.delay(by_bulk).get(timeout=RESULT_TIMEOUT)
        outcomes = [result.get(timeout=RESULT_TIMEOUT)["outcome"] for result in results]
        wait_for(lambda: sim.summary()["by_state"].get("pending", 0) == 0, 30, "hand-offs")
        after = sim.stats()
        pool = set(node.pool_pids())
        samples = scrape(port)
        files = sorted(path.name for path in multiproc.iterdir())

    calls = after["requests"] - before["requests"]
    faults = sum(after["faults_injected"].values()) - sum(before["faults_injected"].values())
    assert faults >= 5, after["faults_injected"]
    cancelled = outcomes.count("cancelled") + summary["outcomes"]["cancelled"]
    assert cancelled == 27 and summary["failed"] == []

    assert total(samples, "kraken_pay_kraken_calls_total") == calls
    failed_calls = calls - total(samples, "kraken_pay_kraken_calls_total", error_class="none")
    answers = total(samples, "kraken_pay_kraken_calls_total", error_class="PayRequestError")
    assert failed_calls - answers == faults
    assert answers == (after["repeated_cancels"] - before["repeated_cancels"]) + 3
    assert total(samples, "kraken_pay_kraken_call_seconds_count") == calls
    assert total(samples, "kraken_pay_turn_wait_seconds_count") == calls  # serial: one a call
    assert total(samples, "kraken_pay_retries_total") == faults  # none failed: each retried
    assert total(samples, "kraken_pay_cancellations_total", outcome="cancelled") == 27
    assert total(samples, "kraken_pay_cancellations_total", outcome="not_cancellable") == 3
    assert total(samples, "kraken_pay_cancellations_total", outcome="failed") == 0
    assert total(samples, "kraken_pay_nonce_rejections_total") == after["nonce_rejections"] == 0
    # Counted by both pool processes, summed by the main one; the stale file is gone.
    pids = {name.rsplit("_", 1)[1].removesuffix(".db") for name in files}
    assert {str(pid) for pid in pool} <= pids
    assert "counter_1.db" not in files


@pytest.mark.slow
def test_a_worker_refuses_to_start_when_its_metrics_port_is_taken(sim, queue, redis_url, tmp_path):
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = worker_env(
            sim_url=sim.url,
            redis_url=redis_db(redis_url, TASKS_DB),
            broker_url=redis_db(redis_url, BROKER_DB),
            KRAKEN_PAY_METRICS_PORT=str(port),
            KRAKEN_QUEUE=queue,
        )
        completed = subprocess.run(
            [str(Path(sys.executable).with_name("celery")), "-A", "tasks", "worker", "-Q", queue],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert completed.returncode == 78
    assert "Traceback" not in completed.stderr
    assert f"KRAKEN_PAY_METRICS_PORT: cannot listen on port {port}" in completed.stderr


def test_metrics_port_must_be_a_port_number():
    from kraken.pay.errors import ConfigurationError
    from tasks.settings import Settings

    assert Settings.from_env({"KRAKEN_PAY_METRICS_PORT": "9808"}).pay_metrics_port == 9808
    for bad in ("0", "65536", "http", "-1"):
        with pytest.raises(ConfigurationError, match="KRAKEN_PAY_METRICS_PORT: must be a whole"):
            Settings.from_env({"KRAKEN_PAY_METRICS_PORT": bad})


def sample(name: str, **labels: str) -> float:
    return metrics.registry().get_sample_value(name, labels) or 0.0


@pytest.mark.parametrize(
    ("fault", "error_class", "when"),
    [
        ({"delay": {"next": 1, "seconds": 1.0}}, "TransportError", "late"),  # timeout 0.3 s
        ({"invalid_nonce": {"next": 1}}, "InvalidNonce", "on_time"),
    ],
)
async def test_nonce_rejections_seen_and_possible_late_ones_are_counted_apart(
    fault, error_class, when
):
    from kraken.pay import Credentials, KrakenError
    from kraken.pay.simulator import Simulator

    async with Simulator() as simulator:
        eid = normalize_external_id(uuid.uuid4())
        simulator.create_requests([eid])
        simulator.set_faults(fault)
        credentials = Credentials(DEMO_API_KEY, DEMO_API_SECRET)
        calls = sample("kraken_pay_kraken_calls_total", error_class=error_class)
        rejections = sample("kraken_pay_nonce_rejections_total", when=when)
        async with metrics.ObservedClient(credentials, base_url=simulator.url, timeout=0.3) as c:
            with pytest.raises(KrakenError):
                await c.cancel_request(eid)
    assert sample("kraken_pay_kraken_calls_total", error_class=error_class) == calls + 1
    assert sample("kraken_pay_nonce_rejections_total", when=when) == rejections + 1


def test_the_ledger_source_reads_open_entries_and_the_oldest_age(redis_sync):
    from tasks.ledger import Ledger

    ledger = Ledger(redis_sync, "kraken-metrics-test")
    source = metrics.ledger_source(ledger)
    assert source() == (0, 0.0)

    ledger.ask(["AAAAAAAAAAE", "AAAAAAAAAAI"], within=60)  # news expected in a minute
    ledger.ask(["AAAAAAAAAAM"], within=3600, scheduled=True)  # waits by design
    entries, oldest = source()
    assert entries == 3
    assert 0 <= oldest < 5  # just asked; the scheduled one does not count

    now_s, now_us = redis_sync.time()
    ledger.ask(["AAAAAAAAAAQ"], at=now_s + now_us / 1e6 - 120, scheduled=True)  # beat missed it
    assert source()[1] >= 119
