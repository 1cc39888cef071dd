"""``python -m kraken.pay.simulator``: serve the simulator until SIGINT or SIGTERM.

The one command line of the simulator. ``kraken-pay simulator`` forwards its arguments to
:func:`main`; a benchmark that takes simulator flags of its own uses :func:`add_arguments` and
:func:`options_from_args`. The flags are made from the fields of ``SimulatorOptions``.

Secrets: ``--secret`` is for throwaway test keys only (any user sees it in ``ps``). A real
secret comes from ``--secret-file PATH`` or the ``KRAKEN_SIM_API_SECRET`` environment variable.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NoReturn

from kraken.pay.simulator.options import SimulatorOptions
from kraken.pay.simulator.server import Simulator

__all__ = [
    "DEFAULT_PORT",
    "EXIT_CANNOT_LISTEN",
    "KEY_ENV",
    "SECRET_ENV",
    "add_arguments",
    "main",
    "options_from_args",
    "run",
    "serve",
]

DEFAULT_PORT = 8765  # fixed, so a worker started in another terminal can be pointed at it
KEY_ENV = "KRAKEN_SIM_API_KEY"
SECRET_ENV = "KRAKEN_SIM_API_SECRET"
EXIT_OK = 0
EXIT_USAGE = 2
EXIT_CANNOT_LISTEN = 4  # kraken-pay's status for "cannot reach or listen" too


def _announce(url: str) -> None:
    print(f"Kraken Pay simulator listening on {url}", flush=True)


def run(options: SimulatorOptions, *, on_ready: Callable[[str], None] = _announce) -> None:
    """Run a simulator until SIGINT or SIGTERM; ``on_ready(url)`` runs once the port is bound."""
    with contextlib.suppress(KeyboardInterrupt):  # where signal handlers are unavailable
        asyncio.run(_serve_until_signalled(Simulator(options=options), on_ready))


def serve(
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    keys: Mapping[str, str] | None = None,
    *,
    on_ready: Callable[[str], None] = _announce,
    **settings: Any,
) -> None:
    """:func:`run` with the options given as keywords (any field of ``SimulatorOptions``)."""
    run(SimulatorOptions.of(keys, host=host, port=port, **settings), on_ready=on_ready)


async def _serve_until_signalled(simulator: Simulator, on_ready: Callable[[str], None]) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stop.set)
    async with simulator:
        on_ready(simulator.url)
        await stop.wait()


# ------------------------------------------------------------------------------ arguments


def _rate_limit(text: str) -> tuple[float, float]:
    capacity, sep, per_second = text.partition(":")
    try:
        if not sep:
            raise ValueError
        return float(capacity), float(per_second)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected CAPACITY:PER_SECOND such as 15:0.33, got {text!r}"
        ) from None


def _latency(text: str) -> tuple[float, float]:
    low, _, high = text.partition(":")
    try:
        bounds = (float(low) / 1000, float(high or low) / 1000)
    except ValueError:
        bounds = (-1.0, -1.0)
    if not 0 <= bounds[0] <= bounds[1] <= 60:
        raise argparse.ArgumentTypeError(f"expected MS or LOW:HIGH such as 20:50, got {text!r}")
    return bounds


class _Secret:
    """A secret as given on the command line, or the file that holds it; never shown."""

    def __init__(self, value: str, *, path: bool) -> None:
        self._value = value
        self._path = path

    def read(self) -> str:
        if not self._path:
            return self._value
        try:
            with open(self._value, encoding="utf-8") as file:
                return file.read().strip()
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or "not UTF-8 text"
            raise ValueError(f"--secret-file {self._value}: cannot read it: {reason}") from None

    def __repr__(self) -> str:
        return f"<secret file {self._value}>" if self._path else "<secret>"


# Fields whose text is not read by the type of their default; "webhooks" is a repeated flag.
_PARSERS: dict[str, Callable[[str], Any]] = {
    "rate_limit": _rate_limit,
    "latency": _latency,
    "seed": int,
}
_FLAGS = {"webhooks": "--webhook"}


def add_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """Add the simulator's flags to a parser or an argument group: ``--key``, ``--secret``,
    ``--secret-file``, then one per field of ``SimulatorOptions``."""
    parser.add_argument(
        "--key",
        action="append",
        dest="keys",
        metavar="KEY",
        help="API key to accept (repeatable; default: the demo key)",
    )
    parser.add_argument(
        "--secret",
        action="append",
        dest="secrets",
        type=lambda text: _Secret(text, path=False),
        metavar="BASE64",
        help="secret of the --key at that place: throwaway test keys only, ps shows it",
    )
    parser.add_argument(
        "--secret-file",
        action="append",
        dest="secrets",
        type=lambda text: _Secret(text, path=True),
        metavar="PATH",
        help=f"file holding the secret of the --key at that place (or set {SECRET_ENV})",
    )
    for spec in dataclasses.fields(SimulatorOptions):
        if spec.name != "keys":
            _add_field(parser, spec)


def _add_field(parser: Any, spec: dataclasses.Field[Any]) -> None:
    flag = _FLAGS.get(spec.name, "--" + spec.name.replace("_", "-"))
    text, metavar = spec.metadata["help"], spec.metadata["metavar"]
    kw: dict[str, Any] = {"dest": spec.name, "default": argparse.SUPPRESS}
    if spec.name == "port":
        kw["default"] = DEFAULT_PORT
    if isinstance(spec.default, bool):
        parser.add_argument(flag, action="store_true", help=text, **kw)
        return
    if spec.name in _FLAGS:
        kw["action"] = "append"
    else:
        kw["type"] = _PARSERS.get(spec.name, type(spec.default))
    shown = kw["default"] if spec.name == "port" else spec.default
    if shown not in (None, ()):
        text = f"{text} (default {shown})"
    parser.add_argument(flag, metavar=metavar, help=text, **kw)


def options_from_args(
    args: argparse.Namespace, environ: Mapping[str, str] | None = None
) -> SimulatorOptions:
    """The options the flags of :func:`add_arguments` ask for; ``ValueError`` names the flag."""
    settings = {
        spec.name: getattr(args, spec.name)
        for spec in dataclasses.fields(SimulatorOptions)
        if spec.name != "keys" and hasattr(args, spec.name)
    }
    keys = _keys(args, os.environ if environ is None else environ)
    return SimulatorOptions.of(keys, **settings)


def _keys(args: argparse.Namespace, environ: Mapping[str, str]) -> dict[str, str] | None:
    """``--key`` with ``--secret``/``--secret-file`` in order, else the environment's pair."""
    keys: list[str] = list(getattr(args, "keys", None) or [])
    secrets = [secret.read() for secret in getattr(args, "secrets", None) or []]
    env_key, env_secret = environ.get(KEY_ENV), environ.get(SECRET_ENV)
    if not keys and env_key:
        keys = [env_key]
    if len(keys) == 1 and not secrets and env_secret is not None:
        secrets = [env_secret.strip()]
    if not keys and not secrets:
        if env_secret is not None:
            raise ValueError(f"{SECRET_ENV}: name its key with --key or {KEY_ENV}")
        return None  # the demo pair
    if len(keys) != len(secrets):
        raise ValueError(
            "--key: give one --secret or --secret-file for each --key, in the same order "
            f"(or a single --key and {SECRET_ENV})"
        )
    if len(set(keys)) != len(keys):
        raise ValueError("--key: each key may be given once")
    return dict(zip(keys, secrets, strict=True))


class _OneLineParser(argparse.ArgumentParser):
    """Bad usage is one line naming the argument and the rule, not the whole usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (--help for usage)\n")


def _parser(prog: str | None = None) -> argparse.ArgumentParser:
    parser = _OneLineParser(
        prog=prog or "python -m kraken.pay.simulator",
        description="A local Kraken Pay server for tests, demos and benchmarks.",
        epilog=f"Environment: {KEY_ENV} and {SECRET_ENV}, a key pair to accept.",
    )
    add_arguments(parser)
    return parser


def main(argv: Sequence[str] | None = None, *, prog: str | None = None) -> int:
    """Parse ``argv`` (default: ``sys.argv[1:]``), serve until signalled; the exit status.

    Never raises ``SystemExit``: bad usage prints a one-line error and returns 2, a port that
    cannot be bound returns 4, and ``--help`` returns 0. ``prog`` names the command in usage.
    """
    parser = _parser(prog)
    try:
        args = parser.parse_args(argv)
        try:
            options = options_from_args(args)
        except ValueError as exc:  # ConfigurationError included: a bad secret, a bad option
            parser.error(str(exc))
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    if options.access_log:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        run(options)
    except OSError as exc:
        where = f"{options.host}:{options.port}"
        print(f"{parser.prog}: cannot listen on {where}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_CANNOT_LISTEN
    return EXIT_OK
