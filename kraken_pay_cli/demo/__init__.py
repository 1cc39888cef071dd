"""``kraken-pay demo``: the simulator, a Redis and Celery workers on this machine.

:mod:`~kraken_pay_cli.demo.run` runs it; :mod:`~kraken_pay_cli.demo.database` finds its
Redis; :mod:`~kraken_pay_cli.demo.faults` says what the simulator injects;
:mod:`~kraken_pay_cli.demo.report` counts and prints; :mod:`~kraken_pay_cli.demo.metrics`
reads the workers' ``/metrics``; :mod:`~kraken_pay_cli.demo.webhooks` receives Kraken's
notifications. :mod:`~kraken_pay_cli.demo.command` is the click command.
"""

from kraken_pay_cli.demo.database import DemoError
from kraken_pay_cli.demo.faults import FAULT_ERRORS, FAULT_KINDS, fault_spec
from kraken_pay_cli.demo.report import Report, Tally
from kraken_pay_cli.demo.run import DemoOptions, run_demo, split_ids, worker_env

__all__ = [
    "FAULT_ERRORS",
    "FAULT_KINDS",
    "DemoError",
    "DemoOptions",
    "Report",
    "Tally",
    "fault_spec",
    "run_demo",
    "split_ids",
    "worker_env",
]
