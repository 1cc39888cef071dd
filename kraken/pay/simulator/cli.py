"""``python -m kraken.pay.simulator``: serve the simulator until SIGINT or SIGTERM.

:func:`serve` is the blocking entry point that other commands (the ``kraken-pay`` CLI,
docker-compose) reuse; :func:`main` only turns arguments into its parameters.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Callable, Mapping, Sequence

from kraken.pay.simulator.server import DEMO_API_KEY, DEMO_API_SECRET, Simulator

__all__ = ["DEFAULT_PORT", "main", "serve"]

DEFAULT_PORT = 8765  # fixed, so a worker started in another terminal can be pointed at it


def _announce(url: str) -> None:
    print(f"Kraken Pay simulator listening on {url}", flush=True)


def serve(
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    keys: Mapping[str, str] | None = None,
    *,
    nonce_window: int = 0,
    rate_limit: tuple[float, float] | None = None,
    seed: int | None = None,
    access_log: bool = False,
    webhooks: Sequence[str] = (),
    latency: tuple[float, float] | None = None,
    accept_form: bool = False,
    on_ready: Callable[[str], None] = _announce,
) -> None:
    """Run a simulator until SIGINT or SIGTERM; ``on_ready(url)`` runs once the port is bound.

    ``webhooks`` are URLs registered at start, as ``POST /_sim/webhooks`` would.
    """
    simulator = Simulator(
        keys,
        host=host,
        port=port,
        nonce_window=nonce_window,
        rate_limit=rate_limit,
        seed=seed,
        access_log=access_log,
        latency=latency,
        accept_form=accept_form,
    )
    for url in webhooks:
        simulator.register_webhook(url)
    with contextlib.suppress(KeyboardInterrupt):  # where signal handlers are unavailable
        asyncio.run(_serve_until_signalled(simulator, on_ready))


async def _serve_until_signalled(simulator: Simulator, on_ready: Callable[[str], None]) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stop.set)
    async with simulator:
        on_ready(simulator.url)
        await stop.wait()


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


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m kraken.pay.simulator",
        description="A local Kraken Pay server for tests, demos and benchmarks.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default %(default)s)")
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help="port, 0 for any (default %(default)s)"
    )
    parser.add_argument("--key", action="append", default=[], help="API key (repeatable)")
    parser.add_argument(
        "--secret", action="append", default=[], help="base64 secret of the --key at that place"
    )
    parser.add_argument(
        "--nonce-window", type=int, default=0, help="the keys' nonce window (default 0)"
    )
    parser.add_argument(
        "--rate-limit",
        type=_rate_limit,
        metavar="CAPACITY:PER_SECOND",
        help="a token bucket per key (default: no limit)",
    )
    parser.add_argument("--seed", type=int, help="seed for fault draws")
    parser.add_argument(
        "--webhook",
        action="append",
        default=[],
        metavar="URL",
        help="send status notifications to URL (repeatable)",
    )
    parser.add_argument(
        "--latency",
        type=_latency,
        metavar="MS[:MS]",
        help="hold each answer this many milliseconds (a range draws uniformly); default none",
    )
    parser.add_argument(
        "--accept-form",
        action="store_true",
        help="also take form bodies, as Kraken's classic endpoints do (default: JSON only)",
    )
    parser.add_argument("--access-log", action="store_true", help="log every request")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if len(args.key) != len(args.secret):
        parser.error("give one --secret for each --key, in the same order")
    keys = dict(zip(args.key, args.secret, strict=True)) or {DEMO_API_KEY: DEMO_API_SECRET}
    if args.access_log:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        serve(
            args.host,
            args.port,
            keys,
            nonce_window=args.nonce_window,
            rate_limit=args.rate_limit,
            seed=args.seed,
            access_log=args.access_log,
            webhooks=args.webhook,
            latency=args.latency,
            accept_form=args.accept_form,
        )
    except ValueError as exc:  # ConfigurationError included: a bad secret, a bad option
        parser.error(str(exc))
    except OSError as exc:
        print(f"cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    return 0
