"""The public names of ``kraken.pay``, ``kraken.pay.webhooks``, ``kraken.pay.simulator`` and
``tasks``, read in a fresh interpreter: each ``__all__`` is the list below, each name in it
resolves, and importing ``tasks`` changes nothing in the process that imports it: it creates
no Celery app and makes none current, adds no logging handler, imports no prometheus_client,
and the signal handlers it connects leave another app's worker, loggers and tasks alone.

A name added to or taken from a package's ``__all__`` is a change of its public interface:
change the list here with it, on purpose.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from typing import Any

import pytest

EXPECTED = {
    "kraken.pay": [
        "CANCEL_REQUEST_PATH",
        "DEFAULT_BASE_URL",
        "KRAKEN_JWKS_URL",
        "STARTER_CAPACITY",
        "STARTER_PER_SECOND",
        "ApiError",
        "AuthenticationError",
        "ClockNonce",
        "ConfigurationError",
        "Credentials",
        "InvalidCallback",
        "InvalidExternalId",
        "InvalidNonce",
        "InvalidRequest",
        "KrakenError",
        "KrakenPayClient",
        "MalformedResponse",
        "NonceSource",
        "Ordering",
        "PayCallback",
        "PayCallbackVerifier",
        "PayRequestError",
        "RateBudget",
        "RateLimited",
        "RedisNonce",
        "ServiceUnavailable",
        "TemporaryLockout",
        "TerminalError",
        "TransientError",
        "TransportError",
        "UnknownApiError",
        "aiohttp_handler",
        "errors",
        "normalize_external_id",
        "receive",
        "sign",
    ],
    "kraken.pay.webhooks": [
        "ISSUER",
        "KRAKEN_JWKS_URL",
        "MAX_BODY_BYTES",
        "REASONS",
        "STATUSES",
        "SUCCESS",
        "InvalidCallback",
        "PayCallback",
        "PayCallbackVerifier",
        "Reply",
        "aiohttp_handler",
        "areceive",
        "receive",
    ],
    "kraken.pay.simulator": [
        "DEMO_API_KEY",
        "DEMO_API_SECRET",
        "FAULT_KINDS",
        "ControlRefused",
        "FaultSpecError",
        "Simulator",
        "SimulatorClient",
        "SimulatorControls",
        "SimulatorOptions",
        "SimulatorThread",
        "run",
        "serve",
    ],
    "tasks": [
        "OUTCOMES",
        "KrakenPayTask",
        "NotRecorded",
        "RetriesExhausted",
        "RetryPolicy",
        "Settings",
        "beat_schedule",
        "bulk_cancel",
        "cancel_request",
        "handle_callback",
        "ledger_for",
        "schedule_cancel",
        "scheduled",
        "settings_for",
        "unschedule_cancel",
    ],
}

# Run with ``python -c`` in a fresh interpreter; prints one JSON document of what it saw.
PROBE = textwrap.dedent(
    """
    import importlib, json, logging, sys, types
    import celery, kombu  # the libraries' own loggers get their NullHandlers here
    from celery import Celery, _state, signals
    from celery.utils.dispatch import Signal

    def handlers():
        found = {"": [type(h).__name__ for h in logging.getLogger().handlers]}
        for name, each in logging.root.manager.loggerDict.items():
            if isinstance(each, logging.Logger) and each.handlers:
                found[name] = [type(h).__name__ for h in each.handlers]
        return found

    def receivers():
        return {
            name: list(sig.receivers)
            for name, sig in vars(signals).items()
            if isinstance(sig, Signal)
        }

    before_handlers, before_receivers = handlers(), receivers()
    import tasks
    seen = {
        "apps": sorted(app.main or "" for app in _state._get_active_apps()),
        "default_app": _state.default_app is not None,
        "current_app": getattr(_state._tls, "current_app", None) is not None,
        "prometheus_client": "prometheus_client" in sys.modules,
        "metrics_created": importlib.import_module("tasks.metrics")._metrics is not None,
        "handlers_added": {
            name: kinds
            for name, kinds in handlers().items()
            if kinds != before_handlers.get(name, [])
        },
    }
    connected = {
        name: [ref for ref in refs if ref not in before_receivers[name]]
        for name, refs in receivers().items()
    }
    seen["connected"] = {
        name: sorted(f"{f.__module__}.{f.__qualname__}" for _, f in new)
        for name, new in connected.items()
        if new
    }

    # Another app's worker, with no Kraken setting at all, serving only its own queue.
    shop = Celery("shop", set_as_current=False, broker="memory://")

    @shop.task(name="shop.ship")
    def ship():
        return None

    shop.amqp.queues.select(["celery"])
    worker = types.SimpleNamespace(app=shop, hostname="shop@host")
    shop_log = logging.getLogger("shop")
    shop_handler = logging.StreamHandler()
    shop_log.addHandler(shop_handler)
    formatter = shop_handler.formatter
    sent = {
        "worker_init": {"sender": worker},
        "worker_process_shutdown": {"sender": None, "pid": 1, "exitcode": 0},
        "worker_shutdown": {"sender": worker},
        "after_setup_logger": {"sender": None, "logger": shop_log},
        "after_setup_task_logger": {"sender": None, "logger": shop_log},
        "task_prerun": {"sender": ship, "task_id": "t-1", "task": ship},
    }
    refused = {}
    for name, new in connected.items():
        for _, handler in new:
            try:
                handler(signal=getattr(signals, name), **sent[name])
            except BaseException as exc:
                refused[name] = f"{type(exc).__name__}: {exc}"
    seen["foreign"] = {
        "refused": refused,
        "limits": {
            name: [shop.tasks[name].soft_time_limit, shop.tasks[name].time_limit]
            for name in ("shop.ship", "kraken_pay.cancel_request", "kraken_pay.cancel_chunk")
        },
        "formatter_kept": shop_handler.formatter is formatter,
        "apps": sorted(app.main or "" for app in _state._get_active_apps()),
    }

    seen["names"] = {}
    for package in ("kraken.pay", "kraken.pay.webhooks", "kraken.pay.simulator", "tasks"):
        module = importlib.import_module(package)
        names = list(module.__all__)
        star = {}
        exec(f"from {package} import *", star)
        seen["names"][package] = {
            "all": names,
            "unresolved": [n for n in names if not hasattr(module, n) or n not in star],
        }
    print(json.dumps(seen))
    """
)


@pytest.fixture(scope="module")
def seen() -> dict[str, Any]:
    """What a fresh interpreter saw while it imported the packages (see ``PROBE``)."""
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.splitlines()[-1])


@pytest.mark.parametrize("package", sorted(EXPECTED))
def test_each_package_exports_exactly_its_public_names(seen, package):
    assert seen["names"][package]["all"] == EXPECTED[package]


@pytest.mark.parametrize("package", sorted(EXPECTED))
def test_every_public_name_resolves_and_star_imports(seen, package):
    assert seen["names"][package]["unresolved"] == []


def test_importing_tasks_creates_no_celery_app_and_makes_none_current(seen):
    assert (seen["apps"], seen["default_app"], seen["current_app"]) == ([], False, False)


def test_importing_tasks_adds_no_logging_handler(seen):
    # Celery and kombu give their own loggers a NullHandler as they are imported.
    added = {
        name: kinds
        for name, kinds in seen["handlers_added"].items()
        if not (name.startswith(("celery", "kombu")) and set(kinds) == {"NullHandler"})
    }
    assert added == {}


def test_importing_tasks_imports_no_prometheus_client_and_creates_no_metric(seen):
    assert (seen["prometheus_client"], seen["metrics_created"]) == (False, False)


def test_tasks_connects_only_its_worker_and_logging_handlers(seen):
    assert seen["connected"] == {
        "after_setup_logger": ["tasks.logs._json_handlers"],
        "after_setup_task_logger": ["tasks.logs._json_handlers"],
        "task_prerun": ["tasks.logs._reset_fields"],
        "worker_init": ["tasks.worker._on_worker_init"],
        "worker_process_shutdown": ["tasks.worker._pool_process_exits"],
        "worker_shutdown": ["tasks.worker._worker_stops"],
    }


def test_those_handlers_leave_another_apps_worker_loggers_and_tasks_alone(seen):
    foreign = seen["foreign"]
    assert foreign["refused"] == {}  # a worker without Kraken settings is not stopped
    assert set(map(tuple, foreign["limits"].values())) == {(None, None)}  # no limits set
    assert foreign["formatter_kept"]  # its log lines keep their format
    assert foreign["apps"] == ["shop"]  # no app of the library's was made on the way
