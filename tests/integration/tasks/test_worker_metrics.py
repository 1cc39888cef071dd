"""Metrics of real workers: a prefork worker serves the sum over its pool processes, equal
to what the simulator counted; a worker whose metrics port is taken refuses to start."""

from __future__ import annotations

import socket
import urllib.request
import uuid

from command_support import celery_worker
from prometheus_client.parser import text_string_to_metric_families
from tasks_support import wait_for

from kraken.pay import normalize_external_id
from kraken_pay_cli.local import free_port
from tasks import bulk_cancel, cancel_request

RESULT_TIMEOUT = 60


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


def test_a_prefork_worker_serves_what_the_simulator_counted(
    sim, environment, running_worker, tmp_path
):
    port = free_port()
    multiproc = tmp_path / "prometheus"
    multiproc.mkdir()
    (multiproc / "counter_1.db").write_bytes(b"a stale file of an earlier run")
    env = environment | {
        "KRAKEN_PAY_METRICS_PORT": str(port),
        "PROMETHEUS_MULTIPROC_DIR": str(multiproc),
    }
    ids = [normalize_external_id(uuid.uuid4()) for _ in range(30)]
    sim.create_requests(ids[:27])
    sim.create_requests(ids[27:], "paid")
    by_task, by_bulk = ids[::2], ids[1::2]
    with running_worker(env, concurrency=2) as node:
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


def test_a_worker_refuses_to_start_when_its_metrics_port_is_taken(environment, queue):
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = {"KRAKEN_PAY_METRICS_PORT": str(port), "KRAKEN_QUEUE": queue}
        completed = celery_worker("-Q", queue, **(environment | settings))
    assert completed.returncode == 78
    assert "Traceback" not in completed.stderr
    assert f"KRAKEN_PAY_METRICS_PORT: cannot listen on port {port}" in completed.stderr
