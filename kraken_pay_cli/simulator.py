"""``kraken-pay simulator``: the simulator's own command line, ``python -m kraken.pay.simulator``.

Every argument, ``--help`` included, goes to :func:`kraken.pay.simulator.cli.main` as it is,
so the two commands never differ but in the name their messages start with; its exit
status is that command's.
"""

from __future__ import annotations

import click

__all__ = ["simulator"]


@click.command(
    context_settings={
        "ignore_unknown_options": True,
        "allow_extra_args": True,
        "help_option_names": [],
    },
    short_help="Run the Kraken Pay simulator until Ctrl-C.",
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def simulator(args: tuple[str, ...]) -> int:
    """Run the Kraken Pay simulator until Ctrl-C (`kraken-pay simulator --help`: its options).

    It accepts the demo key pair (kraken.pay.simulator.DEMO_API_KEY and DEMO_API_SECRET, the
    pair in kraken.env.example); point workers at it with KRAKEN_API_URL. Control it over
    HTTP: POST /_sim/requests, POST /_sim/faults, GET /_sim/stats.
    """
    from kraken.pay.simulator.cli import main

    return main(list(args), prog="kraken-pay simulator")
