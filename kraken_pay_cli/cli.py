"""The ``kraken-pay`` command: the group of every command, one module each.

=================  ==================================================================
module             commands
=================  ==================================================================
``app``            the group itself: one-line errors, exit statuses, shared helpers
``cancel``         ``cancel`` (queued, ``--wait``, ``--direct``)
``bulk``           ``bulk-cancel``
``schedule``       ``schedule``, ``unschedule``, ``scheduled``
``check``          ``check``
``simulator``      ``simulator`` (``python -m kraken.pay.simulator``)
``demo``           ``demo``
=================  ==================================================================
"""

from __future__ import annotations

from collections.abc import Sequence

from kraken_pay_cli.app import command_group, parse_id, redact
from kraken_pay_cli.bulk import bulk_cancel
from kraken_pay_cli.cancel import cancel
from kraken_pay_cli.check import check
from kraken_pay_cli.demo.command import demo
from kraken_pay_cli.schedule import parse_duration, parse_time, schedule, scheduled, unschedule
from kraken_pay_cli.simulator import simulator

__all__ = ["cli", "main", "parse_duration", "parse_id", "parse_time", "redact"]

cli = command_group(cancel, bulk_cancel, schedule, unschedule, scheduled, simulator, check, demo)


def main(argv: Sequence[str] | None = None) -> None:
    """The console script ``kraken-pay``."""
    cli.main(argv, prog_name="kraken-pay")
