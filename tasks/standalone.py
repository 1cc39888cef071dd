"""The standalone app, built once per process: the fleet of ``celery -A tasks worker``.

It is configured from the module ``KRAKEN_PAY_CELERY_CONFIG`` names (default
``celeryconfig``: the repository's ``celeryconfig.py``, found in the working directory as
Celery finds its config modules), and from the environment through it. The tasks do not
depend on it for what makes them safe: those options are the tasks' own. ``kraken-pay``
commands use it too; :mod:`tasks.celery` is the module Celery's ``-A tasks`` finds.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable

from celery import Celery

from kraken.pay import ConfigurationError
from tasks.base import task_name

__all__ = ["CONFIG_VARIABLE", "EX_CONFIG", "exit_on_bad_config", "reset", "standalone_app"]

CONFIG_VARIABLE = "KRAKEN_PAY_CELERY_CONFIG"
EX_CONFIG = 78  # sysexits.h: a configuration error

_app: Celery | None = None
_lock = threading.Lock()


def standalone_app() -> Celery:
    """The standalone app (built and configured on first call); ConfigurationError if its
    configuration cannot be loaded."""
    global _app
    with _lock:
        if _app is None:
            _app = _build()
        return _app


def reset() -> None:
    """Read the config module again, and the library's settings, from the environment as it
    is now (tests that change the environment between commands)."""
    from tasks.settings import forget

    module = _config_module()
    sys.modules.pop(module, None)
    with _lock:
        if _app is not None:
            _configure(_app, module)
            forget(_app)


def _config_module() -> str:
    return os.environ.get(CONFIG_VARIABLE, "").strip() or "celeryconfig"


def _build() -> Celery:
    app = Celery("kraken_pay")
    _configure(app, _config_module())
    app.task(name=task_name("noop"))(_noop)
    return app


def _configure(app: Celery, module: str) -> None:
    try:
        app.config_from_object(module, force=True)
    except ConfigurationError as exc:
        raise ConfigurationError(f"{exc} (in {module})") from None
    except ImportError as exc:
        raise ConfigurationError(
            f"{CONFIG_VARIABLE}: cannot import {module!r} ({type(exc).__name__}); run from the "
            "directory that holds celeryconfig.py, or name your config module"
        ) from None


def _noop() -> None:
    """Does nothing: the baseline of bench/end_to_end.py, and a readiness probe for workers."""


def exit_on_bad_config(build: Callable[[], Celery]) -> Celery:
    """``build()``, or one line on stderr and exit status EX_CONFIG: for Celery's command."""
    try:
        return build()
    except ConfigurationError as exc:
        print(f"kraken_pay: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(EX_CONFIG) from None
