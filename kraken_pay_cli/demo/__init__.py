"""``kraken-pay demo``: the simulator, a Redis and Celery workers on this machine.

:mod:`~kraken_pay_cli.demo.run` runs it; :mod:`~kraken_pay_cli.demo.database` finds its
Redis; :mod:`~kraken_pay_cli.demo.faults` says what the simulator injects;
:mod:`~kraken_pay_cli.demo.report` counts and prints; :mod:`~kraken_pay_cli.demo.metrics`
reads the workers' ``/metrics``; :mod:`~kraken_pay_cli.demo.webhooks` receives Kraken's
notifications (and the workers import its hook alone). :mod:`~kraken_pay_cli.demo.command`
is the click command, which imports the rest only when the demo runs: importing this
package imports none of them.
"""
