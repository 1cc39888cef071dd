"""The same tasks with RabbitMQ as the broker; Redis then only holds nonces and results."""

from __future__ import annotations

import uuid

import pytest
from kombu import Connection
from tasks_support import RABBITMQ_URL, Worker, client_app, workers

from kraken.pay import normalize_external_id
from tasks import cancel_request
from tasks.celery import app


def rabbitmq_answers() -> bool:
    try:
        with Connection(RABBITMQ_URL, connect_timeout=2) as connection:
            connection.ensure_connection(max_retries=1)
        return True
    except Exception:
        return False


@pytest.fixture(scope="module")
def rabbitmq() -> str:
    if not rabbitmq_answers():
        pytest.skip(f"no RabbitMQ answers at {RABBITMQ_URL.replace('guest:guest@', '')}")
    return RABBITMQ_URL


def test_cancel_request_works_with_rabbitmq_as_the_broker(
    rabbitmq, sim, environment, broker_url, queue, log_dir
):
    ok, after_fault, paid = (normalize_external_id(uuid.uuid4()) for _ in range(3))
    sim.create_requests([ok, after_fault])
    sim.create_requests([paid], state="paid")
    env = environment | {"CELERY_BROKER_URL": rabbitmq, "CELERY_RESULT_BACKEND": broker_url}
    node = Worker(env, queue, log_dir, pool="prefork", concurrency=2)
    rabbit = {"broker_url": rabbitmq, "result_backend": broker_url, "task_default_queue": queue}
    try:
        with client_app(app, **rabbit) as client, workers(node):
            node.wait_ready(client)
            first = cancel_request.delay(ok).get(timeout=30)
            sim.set_faults({"reset_after": {"next": 1}})
            second = cancel_request.delay(after_fault).get(timeout=30)
            third = cancel_request.delay(paid).get(timeout=30)
            states = [sim.request(eid)["state"] for eid in (ok, after_fault, paid)]
    finally:
        with Connection(rabbitmq) as connection:
            connection.default_channel.queue_delete(queue)

    assert first["outcome"] == "cancelled"
    assert (second["outcome"], second["confirmed_on_retry"]) == ("cancelled", True)
    assert third["outcome"] == "not_cancellable"
    assert states == ["cancelled", "cancelled", "paid"]
    assert "Connected to amqp://guest:**@127.0.0.1:5672//" in node.log()
