"""Celery's settings for the standalone fleet: ``celery -A tasks worker`` and ``... beat``.

Loaded by ``tasks/celery.py`` (``app.config_from_object("celeryconfig")``, found in the
working directory); not installed with the package, and not used when the tasks run on your
own app. What makes the tasks safe (acks late, reject on worker lost, JSON, time limits from
the worker's own settings) is an option of each task, so nothing here can weaken it; the
values below are the fleet's, each read from the environment. The library's own settings
(``KRAKEN_*``, ``REDIS_URL``) are not Celery settings: the tasks read them lazily, so the
Kraken secret is never part of Celery's configuration and ``celery report`` cannot show it.
"""

import os

from tasks.beat import beat_schedule as _beat_schedule
from tasks.parsing import DEFAULT_QUEUE, DEFAULT_REDIS_URL


def _env(name: str, default: str) -> str:
    return os.environ.get(name, "").strip() or default


def _seconds(name: str, default: float) -> float:
    raw = _env(name, str(default))
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 1.0 <= value <= 7 * 86400.0:
        from kraken.pay.errors import ConfigurationError

        raise ConfigurationError(f"{name}: must be a number of seconds from 1 to 604800")
    return value


_redis_url = _env("REDIS_URL", DEFAULT_REDIS_URL)
_visibility_timeout = _seconds("CELERY_VISIBILITY_TIMEOUT", 900.0)

# CELERY_BROKER_URL (default REDIS_URL, itself default redis://127.0.0.1:6379/0). RabbitMQ
# (amqp://...) works too; Redis then only holds nonces, turns, budgets and schedules.
broker_url = _env("CELERY_BROKER_URL", _redis_url)

# CELERY_RESULT_BACKEND (default REDIS_URL): where `cancel_request.delay(...).get()` reads.
result_backend = _env("CELERY_RESULT_BACKEND", _redis_url)

# The library's queue is this fleet's default: `celery -A tasks worker` consumes it with no
# -Q. KRAKEN_QUEUE names another (the tasks read the same variable).
task_default_queue = _env("KRAKEN_QUEUE", DEFAULT_QUEUE)

# JSON only, both ways: a message can never make a worker unpickle code, and task arguments
# and results stay readable by any client.
task_serializer = "json"
result_serializer = "json"
accept_content = ["json"]
result_accept_content = ["json"]

# Each process reserves one task at a time: a slow Kraken answer holds up one task, not a
# batch of prefetched ones, and a dying worker takes as few unstarted tasks down as possible.
worker_prefetch_multiplier = 1

# CELERY_VISIBILITY_TIMEOUT (default 900 s): how long Redis waits for a delivered task to be
# acknowledged before handing it to another worker. It bounds the recovery time after a whole
# node is lost; it must exceed the longest retry countdown (KRAKEN_RETRY_MAX_DELAY) plus the
# task time limit, which the worker checks when it starts. (RabbitMQ ignores it and has its
# own consumer_timeout, 30 minutes by default.)
# Workers look for such tasks every `unacked_restore_interval` seconds (a tenth of the
# timeout, at most 10 s; kombu's default would look only every 100 s).
broker_transport_options = {
    "visibility_timeout": _visibility_timeout,
    "unacked_restore_interval": max(1, min(10, int(_visibility_timeout // 10))),
    "unacked_restore_throttle": 1,
}

# CELERY_RESULT_EXPIRES (default 86400 s): results are deleted from the backend after a day.
result_expires = _seconds("CELERY_RESULT_EXPIRES", 86400.0)

# Keep trying to reach the broker when a worker starts before it (docker-compose, reboots).
broker_connection_retry_on_startup = True

# A task that runs while the broker connection drops keeps running; with late
# acknowledgement it is delivered again once the connection is back (a second "already
# cancelled" answer is harmless). True would mark it REVOKED and drop it: a lost
# cancellation, so a worker of the kraken_pay queue refuses to start with True.
worker_cancel_long_running_tasks_on_connection_loss = False

# Task events for Flower and `celery events`, without restarting workers with -E.
worker_send_task_events = True
task_send_sent_event = True

# A unified time zone for countdowns between hosts.
enable_utc = True
timezone = "UTC"

# `celery -A tasks beat` sends these (tasks/beat.py): dispatch_due every
# KRAKEN_SCHEDULE_INTERVAL seconds (default 1), and KRAKEN_PAY_SWEEP every
# KRAKEN_PAY_SWEEP_INTERVAL seconds when set.
beat_schedule = _beat_schedule()
