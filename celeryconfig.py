"""Celery's settings for the ``tasks`` app, every one from the environment (tasks/settings.py).

Loaded by ``tasks.app`` with ``app.config_from_object("celeryconfig")``. A web process that
only queues tasks reads the same module; it needs no Kraken credentials. The Kraken secret is
never a Celery setting, so ``celery report`` and the like cannot show it.
"""

from tasks.settings import get_settings

_settings = get_settings()
_soft_limit, _hard_limit = _settings.task_time_limits()

# CELERY_BROKER_URL (default REDIS_URL, itself default redis://127.0.0.1:6379/0). RabbitMQ
# (amqp://...) works too; Redis then only holds nonces, locks and budgets.
broker_url = _settings.broker_url

# CELERY_RESULT_BACKEND (default REDIS_URL): where `cancel_request.delay(...).get()` reads.
result_backend = _settings.result_backend

# JSON only, both ways: a message can never make a worker unpickle code, and task arguments
# and results stay readable by any client.
task_serializer = "json"
result_serializer = "json"
accept_content = ["json"]
result_accept_content = ["json"]

# Acknowledge a task after it ran, not when it arrives, so a worker that dies mid-task (OOM
# kill, SIGKILL, a lost host) leaves the message to be delivered again.
task_acks_late = True

# When the pool process running a task dies, put the task back in the queue at once
# (instead of marking it failed with WorkerLostError).
task_reject_on_worker_lost = True

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
    "visibility_timeout": _settings.visibility_timeout,
    "unacked_restore_interval": max(1, min(10, int(_settings.visibility_timeout // 10))),
    "unacked_restore_throttle": 1,
}

# CELERY_TASK_SOFT_TIME_LIMIT / CELERY_TASK_TIME_LIMIT: by default a margin above the longest
# one call may take (the per-key lock's wait, KRAKEN_TIMEOUT for the request, one re-sign).
# The client's own timeouts fire first; these only catch what they cannot.
task_soft_time_limit = _soft_limit
task_time_limit = _hard_limit

# CELERY_RESULT_EXPIRES (default 86400 s): results are deleted from the backend after a day.
result_expires = _settings.result_expires

# Keep trying to reach the broker when a worker starts before it (docker-compose, reboots).
broker_connection_retry_on_startup = True

# With late acknowledgement a task that runs while the broker connection drops is delivered
# again anyway; cancel it rather than let it run twice.
worker_cancel_long_running_tasks_on_connection_loss = True

# A unified time zone for countdowns between hosts.
enable_utc = True
timezone = "UTC"

# `celery -A tasks beat` sends these. KRAKEN_SCHEDULE_INTERVAL (default 1 s): how often due
# scheduled cancellations (tasks/schedule.py) are dispatched; a cancellation happens at most
# about this long after its due time, never before. KRAKEN_PAY_SWEEP (off by default) and
# KRAKEN_PAY_SWEEP_INTERVAL (default 300 s): your function that returns ids to cancel.
# A tick that waited a minute in the queue is dropped: a later one does its work.
beat_schedule = {
    "kraken-dispatch-scheduled": {
        "task": "tasks.dispatch_due",
        "schedule": _settings.schedule_interval,
        "options": {"expires": 60.0},
    },
}
if _settings.sweep:
    beat_schedule["kraken-sweep"] = {
        "task": "tasks.sweep",
        "schedule": _settings.sweep_interval,
        "options": {"expires": max(60.0, _settings.sweep_interval)},
    }
