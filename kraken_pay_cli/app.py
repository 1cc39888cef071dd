"""What every ``kraken-pay`` command shares: the group, exit statuses, one-line errors.

Every error is one line on stderr, never a traceback, and the exit status says what went
wrong (listed in ``kraken-pay --help``). The API secret is never printed: configuration
errors name the variable, not its value, and URLs are shown without their passwords.
``kraken-pay simulator`` is the simulator's own command line: its usage errors and exit
statuses are that command's.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import uuid
from collections.abc import Sequence
from typing import Any

import click

from kraken.pay import (
    AuthenticationError,
    ConfigurationError,
    TransportError,
    normalize_external_id,
)

__all__ = [
    "EXIT_CONFIG",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_UNREACHABLE",
    "EXIT_USAGE",
    "CommandError",
    "command_group",
    "describe",
    "error",
    "exit_code_for",
    "is_default",
    "parse_id",
    "parse_ids",
    "redact",
    "release_results",
    "settings",
    "standalone",
]

EXIT_OK = 0  # everything asked for was done (an outcome such as not_found counts as done)
EXIT_FAILED = 1  # some cancellations failed, or did not finish in time; a check failed
EXIT_USAGE = 2  # bad usage or bad input: an unknown option, a malformed id, an unreadable file
EXIT_CONFIG = 3  # configuration: credentials missing, undecodable or refused by Kraken
EXIT_UNREACHABLE = 4  # cannot reach Redis, the broker or the API
EXIT_INTERRUPTED = 130  # Ctrl-C or SIGTERM; everything the command started was stopped

EXIT_CODES_HELP = f"""\b
Exit status:
  {EXIT_OK:<3}  everything asked for was done
  {EXIT_FAILED:<3}  some cancellations failed or did not finish in time; a check failed
  {EXIT_USAGE:<3}  bad usage or input (unknown option, malformed id, unreadable file)
  {EXIT_CONFIG:<3}  configuration: credentials missing, undecodable, or refused by Kraken
  {EXIT_UNREACHABLE:<3}  cannot reach Redis, the broker or the API
  {EXIT_INTERRUPTED:<3}  interrupted (Ctrl-C, SIGTERM)
`kraken-pay simulator` is `python -m kraken.pay.simulator`: its own options and statuses.
"""

_HINTS = {
    EXIT_CONFIG: " (check KRAKEN_API_KEY and KRAKEN_API_SECRET; `kraken-pay check` says more)",
    EXIT_UNREACHABLE: " (`kraken-pay check` says what answers and what does not)",
}

_PASSWORD_IN_URL = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:/@\s]*):[^@/\s]*@")


class CommandError(click.ClickException):
    """An error the user can act on: one line on stderr and an exit status of its own."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def redact(text: str) -> str:
    """``text`` with the password of every URL in it replaced by ``***``."""
    return _PASSWORD_IN_URL.sub(r"\g<scheme>\g<user>:***@", text)


def exit_code_for(exc: BaseException) -> int:
    """The exit status that says what ``exc`` means to the person at the shell."""
    from kombu.exceptions import OperationalError
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    if isinstance(exc, ConfigurationError | AuthenticationError):
        return EXIT_CONFIG
    if isinstance(exc, ValueError):  # InvalidExternalId and other bad input
        return EXIT_USAGE
    if isinstance(exc, TransportError) and not exc.ambiguous:  # never reached Kraken
        return EXIT_UNREACHABLE
    unreachable = (OperationalError, RedisConnectionError, RedisTimeoutError, OSError)
    if isinstance(exc, unreachable):
        return EXIT_UNREACHABLE
    return EXIT_FAILED


def describe(exc: BaseException) -> str:
    """One line about ``exc``: its class and message, passwords removed."""
    message = " ".join(str(exc).split())
    if isinstance(exc, CommandError | ConfigurationError):
        return redact(message)
    return redact(f"{type(exc).__name__}: {message}" if message else type(exc).__name__)


def error(line: str) -> None:
    """One line on stderr."""
    click.echo(line, err=True)


class _Group(click.Group):
    """Turns every error into one line on stderr and an exit status; never a traceback."""

    def main(  # type: ignore[override]
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> int:
        code = self._run(args, prog_name or "kraken-pay", complete_var, extra)
        if standalone_mode:
            sys.exit(code)
        return code

    def _run(self, args: Any, prog_name: str, complete_var: Any, extra: dict[str, Any]) -> int:
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.UsageError as exc:
            where = exc.ctx.command_path if exc.ctx else prog_name
            error(f"{where}: {exc.format_message().rstrip('.')} (see '{where} --help')")
            return EXIT_USAGE
        except click.ClickException as exc:
            error(f"{prog_name}: {describe(exc) if isinstance(exc, CommandError) else exc}")
            return exc.exit_code
        except (click.Abort, KeyboardInterrupt):
            error(f"{prog_name}: interrupted")
            return EXIT_INTERRUPTED
        except Exception as exc:  # one line, whatever it is: the status says what kind
            code = exit_code_for(exc)
            error(f"{prog_name}: {describe(exc)}{_HINTS.get(code, '')}")
            return code
        return rv if isinstance(rv, int) else EXIT_OK


_HELP = """Cancel Kraken Pay payment requests through Celery, and check the setup.

Configuration comes from the environment, as for the workers: KRAKEN_API_KEY,
KRAKEN_API_SECRET, KRAKEN_API_URL, REDIS_URL, CELERY_BROKER_URL, ... (see
kraken.env.example).
"""


def command_group(*commands: click.Command) -> click.Group:
    """The ``kraken-pay`` group of ``commands``, with its one-line errors and exit statuses."""
    return _Group(
        "kraken-pay",
        commands=commands,
        help=_HELP,
        epilog=EXIT_CODES_HELP,
        context_settings={"max_content_width": 100},
    )


# ----------------------------------------------------------------------------- the app


def standalone() -> Any:
    """The standalone app (the commands publish through it); ConfigurationError if its
    configuration cannot be loaded."""
    from tasks.standalone import standalone_app

    app = standalone_app()
    _django_ready(str(app.conf.result_backend or ""))
    return app


def _django_ready(backend: str) -> None:
    """A django-db or django-cache result backend reads Django's models: set Django up first,
    as a Django project's worker does (else ``AppRegistryNotReady`` at the first result)."""
    if not backend.startswith(("django-db", "django-cache")):
        return
    if not os.environ.get("DJANGO_SETTINGS_MODULE", "").strip():
        raise CommandError(
            f"CELERY_RESULT_BACKEND: {backend} needs DJANGO_SETTINGS_MODULE (the Django project "
            "whose database holds the results)",
            EXIT_CONFIG,
        )
    import django

    django.setup()  # idempotent


def is_default(variable: str) -> bool:
    """Whether the environment leaves ``variable`` to its default."""
    return not os.environ.get(variable, "").strip()


_noted: set[str] = set()


def settings(note: bool = True) -> Any:
    """The library's settings, as the standalone fleet's workers resolve them; a note on
    stderr, once, when the Redis used is the default one."""
    from tasks.settings import settings_for

    resolved = settings_for(standalone())
    if note and is_default("REDIS_URL") and "REDIS_URL" not in _noted:
        _noted.add("REDIS_URL")
        error(f"kraken-pay: note: REDIS_URL is not set; using {redact(resolved.redis_url)}")
    return resolved


def release_results() -> None:
    """Close the result subscription while Redis still answers. Results freed later, at
    interpreter exit, then have nothing to unsubscribe from (Celery would print a traceback
    trying to, from ``AsyncResult.__del__``)."""
    from tasks.standalone import standalone_app

    consumer = getattr(standalone_app().backend, "result_consumer", None)
    if consumer is not None:
        consumer.stop()
        consumer.subscribed_to.clear()


# ----------------------------------------------------------------------------- ids


def parse_id(text: str) -> str:
    """The canonical external id for ``text``: canonical base64, or a UUID's 8-4-4-4-12 form.

    Digits alone are base64 too, so an integer id must be given in its base64 form.
    """
    value: Any = text.strip()
    if len(value) == 36 and value.count("-") == 4:
        with contextlib.suppress(ValueError):
            value = uuid.UUID(value)
    return normalize_external_id(value)


def parse_ids(texts: Sequence[str]) -> list[str]:
    """Every id of ``texts``, canonical; a usage error naming the first malformed one."""
    ids = []
    for text in texts:
        try:
            ids.append(parse_id(text))
        except ValueError as exc:
            raise click.BadParameter(f"{text!r}: {exc}", param_hint="ID") from None
    return ids
