"""tasks/worker.py: what a worker of the kraken_pay queue refuses, and whom it leaves alone."""

from __future__ import annotations

import pytest
from celery import Celery

from kraken.pay.errors import ConfigurationError
from kraken.pay.simulator import DEMO_API_KEY, DEMO_API_SECRET
from tasks.settings import forget
from tasks.worker import check_worker_config, serves_library

KEYS = {"api_key": DEMO_API_KEY, "api_secret": DEMO_API_SECRET}


@pytest.fixture
def app():
    app = Celery("proj", set_as_current=False, broker="redis://127.0.0.1:6379/0")
    app.conf.kraken_pay = dict(KEYS)
    app.conf.broker_transport_options = {"visibility_timeout": 3600}
    app.conf.worker_prefetch_multiplier = 1
    yield app
    forget(app)


def test_a_sound_configuration_passes(app):
    assert check_worker_config(app).api_key == DEMO_API_KEY


@pytest.mark.parametrize(
    ("setting", "value", "named"),
    [
        ("worker_cancel_long_running_tasks_on_connection_loss", True, "connection_loss"),
        ("worker_prefetch_multiplier", 0, "worker_prefetch_multiplier"),
        ("broker_transport_options", {"visibility_timeout": 60}, "CELERY_VISIBILITY_TIMEOUT"),
    ],
)
def test_settings_that_would_lose_or_double_a_cancellation_are_refused(app, setting, value, named):
    app.conf[setting] = value
    with pytest.raises(ConfigurationError, match=named):
        check_worker_config(app)


def test_prefetched_tasks_count_against_the_visibility_timeout(app):
    app.conf.broker_transport_options = {"visibility_timeout": 700}
    check_worker_config(app)  # 300 s retry cap + one task's 111 s limit fit
    forget(app)
    app.conf.worker_prefetch_multiplier = 4  # four reserved tasks may wait 4 x 111 s
    with pytest.raises(ConfigurationError, match="CELERY_VISIBILITY_TIMEOUT"):
        check_worker_config(app)


def test_a_broker_without_a_visibility_timeout_is_not_held_to_one(app):
    app.conf.broker_url = "amqp://guest:guest@127.0.0.1:5672//"
    app.conf.broker_transport_options = {"visibility_timeout": 1}
    check_worker_config(app)


def test_missing_credentials_are_refused_for_a_worker_of_the_queue(app):
    app.conf.kraken_pay = {}
    forget(app)
    with pytest.raises(ConfigurationError, match="KRAKEN_API_KEY: is not set"):
        check_worker_config(app)


def test_only_a_worker_consuming_the_librarys_queue_is_one_of_ours(app):
    app.amqp.queues.select(["celery"])
    assert not serves_library(app)
    app.amqp.queues.select(["celery", "kraken_pay"])
    assert serves_library(app)
