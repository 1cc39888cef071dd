"""What a worker that serves the library's queue checks and sets when it starts.

The handlers are connected once, by :func:`connect` (``tasks/__init__`` calls it), and act
only on a worker that consumes the library's queue: the project's own workers that serve
other queues are never checked and need no Kraken credentials. A worker that does consume it
refuses to start, with one line on stderr, when its configuration would lose or double a
cancellation, and gives the library's tasks their time limits from its own settings.
"""

from __future__ import annotations

import sys
from typing import Any

from celery import Celery, signals

from kraken.pay import ConfigurationError
from tasks import logs, metrics, runtime
from tasks.base import broker_visibility_timeout, task_name
from tasks.checks import secret_warning
from tasks.retry import RetryPolicy, check_visibility
from tasks.settings import Settings, settings_for
from tasks.standalone import EX_CONFIG

__all__ = ["check_worker_config", "connect", "persistence_warnings", "serves_library"]

log = logs.logger("tasks.worker")

_connected = False


def serves_library(app: Celery) -> bool:
    """Whether this worker consumes the library's queue."""
    queues = app.amqp.queues.consume_from or {}
    return settings_for(app).queue in queues


def check_worker_config(app: Celery) -> Settings:
    """The worker's settings; ConfigurationError, naming the setting, when they cannot work."""
    settings = settings_for(app)
    settings.credentials()
    if settings.pay_sweep:
        from tasks.schedule import load_sweep

        load_sweep(settings.pay_sweep)
    if settings.callback_hook:
        from tasks.callbacks import load_hook

        load_hook(settings.callback_hook)
    conf = app.conf
    if conf.worker_cancel_long_running_tasks_on_connection_loss:
        raise ConfigurationError(
            "worker_cancel_long_running_tasks_on_connection_loss: must be False for a worker "
            "of the kraken_pay queue (Celery marks the cancelled tasks REVOKED and drops them)"
        )
    prefetch = int(conf.worker_prefetch_multiplier or 0)
    if prefetch < 1:
        raise ConfigurationError(
            "worker_prefetch_multiplier: must be at least 1 (0 reserves without limit, so "
            "reserved cancellations outwait the visibility timeout and run twice)"
        )
    visibility = broker_visibility_timeout(app)
    if visibility is not None:
        _, hard = settings.task_time_limits()
        check_visibility(RetryPolicy.from_settings(settings), visibility, hard * prefetch)
    return settings


def _apply_time_limits(app: Celery, settings: Settings) -> None:
    """Time limits from this worker's settings, on this worker's task objects."""
    from tasks.bulk import chunk_time_limits

    soft, hard = settings.task_time_limits()
    for short in ("cancel_request", "bulk_summary", "dispatch_due", "sweep", "handle_callback"):
        task = app.tasks[task_name(short)]
        task.soft_time_limit, task.time_limit = soft, hard
    chunk = app.tasks[task_name("cancel_chunk")]
    limits = chunk_time_limits(settings, broker_visibility_timeout(app))
    chunk.soft_time_limit, chunk.time_limit = limits


def _on_worker_init(sender: Any = None, **_: Any) -> None:
    app = getattr(sender, "app", None)
    if app is None:
        return
    try:
        if not serves_library(app):
            return
        settings = check_worker_config(app)
    except ConfigurationError as exc:
        # SystemExit passes through Celery's signal dispatch: one line, no traceback.
        print(f"celery worker not started: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(EX_CONFIG) from None
    _apply_time_limits(app, settings)
    logs.use_json(settings.log_json)  # applied when Celery sets up the worker's logging
    _warn_short_secret(settings)
    for warning in persistence_warnings(settings.redis_url):
        print(f"celery worker: warning: {warning}", file=sys.stderr, flush=True)
        log.warning(warning, extra={"event": "worker.persistence"})
    if settings.pay_metrics_port:
        _serve_metrics(app, settings.pay_metrics_port)
    log.info("serving queue %s", settings.queue, extra={"event": "worker.serving"})


def _warn_short_secret(settings: Settings) -> None:
    """Kraken's secrets decode to 64 bytes: a shorter one is likely cut or not Kraken's."""
    warning = secret_warning(settings.credentials().secret_size)
    if warning:
        print(f"celery worker: warning: {warning}", file=sys.stderr, flush=True)


def _serve_metrics(app: Celery, port: int) -> None:
    from tasks.ledger import ledger_for

    metrics.set_ledger_source(metrics.ledger_source(ledger_for(app)))
    try:
        metrics.serve(port)
    except OSError as exc:
        print(
            f"celery worker not started: KRAKEN_PAY_METRICS_PORT: cannot listen on port "
            f"{port}: {exc.strerror or exc}",
            file=sys.stderr,
            flush=True,
        )
        raise SystemExit(EX_CONFIG) from None


def persistence_warnings(redis_url: str) -> list[str]:
    """What makes the Redis that holds the ledger lose cancellations, one line each: no
    append-only file (a restart loses every open entry), or an ``allkeys-*`` eviction policy
    (entries evicted silently). Empty when Redis does not say (CONFIG disabled)."""
    import redis

    client = redis.Redis.from_url(redis_url, socket_timeout=2, socket_connect_timeout=2)
    try:
        config = client.config_get("appendonly") | client.config_get("maxmemory-policy")
    except redis.RedisError:
        return []
    finally:
        client.close()
    warnings = []
    if config.get("appendonly") != "yes":
        warnings.append(
            "REDIS_URL: the Redis that holds the ledger has no append-only file "
            "(appendonly no): a restart loses every open cancellation; run it with AOF"
        )
    if str(config.get("maxmemory-policy", "")).startswith("allkeys-"):
        warnings.append(
            "REDIS_URL: the Redis that holds the ledger evicts any key "
            f"(maxmemory-policy {config['maxmemory-policy']}): use noeviction or volatile-*"
        )
    return warnings


def _close_runtime(**_: Any) -> None:
    # Nothing to do in a process that never ran one of the library's tasks.
    runtime.shutdown()


def _pool_process_exits(**_: Any) -> None:
    runtime.shutdown()
    metrics.process_exited()


def _worker_stops(**_: Any) -> None:
    runtime.shutdown()
    metrics.stop_serving()


def connect() -> None:
    """Connect the handlers (idempotent). They do nothing for workers of other queues."""
    global _connected
    if _connected:
        return
    signals.worker_init.connect(_on_worker_init, weak=False)
    signals.worker_process_shutdown.connect(_pool_process_exits, weak=False)
    signals.worker_shutdown.connect(_worker_stops, weak=False)
    logs.connect()
    _connected = True
