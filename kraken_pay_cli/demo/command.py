"""The ``kraken-pay demo`` command: options in, :func:`~kraken_pay_cli.demo.run.run_demo`."""

from __future__ import annotations

import click

from kraken_pay_cli.app import EXIT_UNREACHABLE, CommandError

__all__ = ["demo"]


@click.command()
@click.option(
    "--requests",
    type=click.IntRange(1, 100_000),
    default=300,
    show_default=True,
    help="Payment requests to create and cancel.",
)
@click.option("--workers", type=click.IntRange(1, 8), default=2, show_default=True)
@click.option(
    "--fault-rate",
    type=click.FloatRange(0, 0.9),
    default=0.1,
    show_default=True,
    help="Share of Kraken calls that fail (resets, 5xx, garbled bodies, rate limits, ...).",
)
@click.option("--seed", type=int, help="Seed for the simulator's fault draws.")
def demo(requests: int, workers: int, fault_rate: float, seed: int | None) -> int:
    """Run everything on this machine and cancel a few hundred payment requests.

    Starts the Kraken Pay simulator, a Redis (yours at REDIS_URL, in an empty database
    that it empties again; else a redis-server or an embedded fakeredis) and Celery
    workers; cancels through cancel_request.delay() and bulk_cancel while the simulator
    injects faults, and ends with a table. Everything it started is stopped on exit, also
    on Ctrl-C. Exits 1 if any cancellation failed.
    """
    from kraken_pay_cli.demo.run import DemoError, DemoOptions, run_demo

    options = DemoOptions(
        requests=requests,
        paid=min(10, requests // 10),
        workers=workers,
        fault_rate=fault_rate,
        seed=seed,
    )
    try:
        return run_demo(options)
    except DemoError as exc:
        raise CommandError(str(exc), EXIT_UNREACHABLE) from None
