"""Every Redis database number the demo, the tests and the benchmarks use: this table alone.

All of them are databases of one server (``REDIS_URL``'s, ``127.0.0.1:6379`` by default).
The tests flush theirs, so no other user takes one of :data:`TESTS`; the demo takes an
empty one of :data:`DEMO` and empties it again; the benchmarks keep to theirs.

====  ==========================================================================
db    used by
====  ==========================================================================
0     nobody here: the library's own default ``REDIS_URL``, the user's data
1-6   the demo: the first empty one, from 6 down (marked, emptied on exit)
7     the benchmarks: their Celery broker and results
8     the benchmarks: nonces, turns, budgets, the ledger
9     tests: the example projects' library Redis (``SHOP_REDIS_URL``)
10    tests: the example projects' broker; the docker-compose topology
11    tests: the example projects' results; the schedule and beat tests
12    tests: the workers' nonces, turns and ledger
13    tests: the workers' broker and results
14    tests: kept free for them
15    tests: ``REDIS_URL``'s default for the suite, flushed before each use
====  ==========================================================================
"""

from __future__ import annotations

__all__ = [
    "BENCH",
    "BENCH_BROKER",
    "DEMO",
    "TESTS",
    "TEST_BROKER",
    "TEST_COMPOSE",
    "TEST_DEFAULT",
    "TEST_PROJECT_BACKEND",
    "TEST_PROJECT_BROKER",
    "TEST_PROJECT_LIBRARY",
    "TEST_SCHEDULE",
    "TEST_TASKS",
]

DEMO = range(6, 0, -1)  # in the order the demo tries them
BENCH_BROKER = 7
BENCH = 8

TESTS = range(9, 16)  # flushed by the test suite: nothing else uses them
TEST_PROJECT_LIBRARY = 9
TEST_PROJECT_BROKER = 10
TEST_COMPOSE = 10
TEST_PROJECT_BACKEND = 11
TEST_SCHEDULE = 11
TEST_TASKS = 12
TEST_BROKER = 13
TEST_DEFAULT = 15
