"""The ``kraken-pay`` command line, the demo, and the machinery of local runs.

Tooling around the Celery integration (``tasks``), never part of it: :mod:`.cli` is the
command (one module per command group), :mod:`.demo` the demo, :mod:`.local` the embedded
Redis, worker processes and Redis database numbers that the demo, the tests and the
benchmarks share. Importing this package imports none of them.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> None:
    """The console script ``kraken-pay``."""
    from kraken_pay_cli.cli import main as run

    run(argv)
