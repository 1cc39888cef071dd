"""The machinery of a run on this machine, shared by the demo, the tests and the benchmarks.

* :mod:`~kraken_pay_cli.local.redis`: a Redis that answers (the configured one, else a
  ``redis-server`` or fakeredis started here), and ``redis-server`` on its own;
* :mod:`~kraken_pay_cli.local.nodes`: ``celery worker`` and ``beat`` processes;
* :mod:`~kraken_pay_cli.local.env`: the one environment of such a worker;
* :mod:`~kraken_pay_cli.local.databases`: the one table of Redis database numbers.

None of it is used by ``tasks`` or by a production command.
"""

from kraken_pay_cli.local import databases
from kraken_pay_cli.local.env import DEMO_TUNING, QUICK_TUNING, clean_environ, worker_env
from kraken_pay_cli.local.nodes import (
    CELERY,
    Beat,
    CeleryNode,
    Worker,
    WorkerError,
    wait_answering,
    workers,
)
from kraken_pay_cli.local.ports import free_port
from kraken_pay_cli.local.redis import RedisProcess, redis_answers, redis_db, redis_server

__all__ = [
    "CELERY",
    "DEMO_TUNING",
    "QUICK_TUNING",
    "Beat",
    "CeleryNode",
    "RedisProcess",
    "Worker",
    "WorkerError",
    "clean_environ",
    "databases",
    "free_port",
    "redis_answers",
    "redis_db",
    "redis_server",
    "wait_answering",
    "worker_env",
    "workers",
]
