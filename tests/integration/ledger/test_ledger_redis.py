"""The ledger where a real Redis, or a dead broker, is what the test is about: two apps
sharing one Redis, two relays racing on it, a worker's warning about a Redis that would lose
the ledger, and ``delay`` returning once recorded while the broker is down (slow: the publish
gives up only after its connection attempts)."""

from __future__ import annotations

import threading
import uuid

import redis
from celery import Celery
from tasks_support import redis_db

from kraken.pay import normalize_external_id
from kraken_pay_cli.local import databases, redis_server
from tasks.celery import app
from tasks.ledger import Ledger, ledger_for
from tasks.schedule import schedule_cancel
from tasks.settings import forget
from tasks.worker import persistence_warnings

EID = normalize_external_id(uuid.UUID(int=7))
SCHEDULE_DB = databases.TEST_SCHEDULE  # no worker of another test claims ids from this database


def test_delay_returns_once_recorded_even_when_the_broker_is_down(ledger):
    task = app.tasks["kraken_pay.cancel_request"]
    saved = app.conf.broker_url
    app.conf.broker_url = "redis://127.0.0.1:1/0"
    app._pool = None
    try:
        result = task.apply_async((EID,), retry=False)
    finally:
        app.conf.broker_url = saved
        app._pool = None
    entry = ledger.entry(EID)
    assert entry.task_id == result.id
    assert [e.external_id for e in ledger.claim_due(10, grace=60)] == [EID]  # due at once


def test_two_apps_sharing_a_redis_never_see_each_others_entries(redis_url):
    shared = redis.Redis.from_url(redis_url)
    apps = [Celery(name, set_as_current=False) for name in ("shop_a", "shop_b")]
    for name, each in zip(("a", "b"), apps, strict=True):
        each.conf.kraken_pay = {"redis_url": redis_url, "redis_prefix": f"test-{name}"}
    try:
        mine, theirs = normalize_external_id(uuid.uuid4()), normalize_external_id(uuid.uuid4())
        schedule_cancel(mine, in_=0, app=apps[0])
        schedule_cancel(theirs, in_=0, app=apps[1])
        a, b = ledger_for(apps[0]), ledger_for(apps[1])
        assert [e.external_id for e in a.claim_due(100, grace=60)] == [mine]
        assert [e.external_id for e in b.claim_due(100, grace=60)] == [theirs]
        assert shared.hget("kraken:ledger:open", mine) is None  # nothing under the default
        assert shared.hget("kraken:ledger:open", theirs) is None
    finally:
        for each in apps:
            forget(each)
        for key in shared.keys("test-[ab]:*"):
            shared.delete(key)
        shared.close()


def test_a_worker_warns_of_a_redis_that_would_lose_the_ledger():
    with redis_server(prefer="process") as url:  # a Redis of the test's own, no AOF
        client = redis.Redis.from_url(url)
        assert [w.split(":")[0] for w in persistence_warnings(url)] == ["REDIS_URL"]
        client.config_set("appendonly", "yes")
        assert persistence_warnings(url) == []
        client.config_set("maxmemory-policy", "allkeys-lru")
        (warning,) = persistence_warnings(url)
        assert "allkeys-lru" in warning
        client.close()


def test_two_relays_racing_on_real_redis_claim_each_id_once(redis_url):
    client = redis.Redis.from_url(redis_db(redis_url, SCHEDULE_DB))
    client.flushdb()
    everything = [normalize_external_id(uuid.uuid4()) for _ in range(2000)]
    for eid in everything:
        schedule_cancel(eid, in_=0, redis=client)
    claims: list[list[str]] = [[], []]
    start = threading.Barrier(2)

    def relay(mine: list[str]) -> None:
        own = Ledger(redis.Redis.from_url(redis_db(redis_url, SCHEDULE_DB)))
        start.wait()
        while batch := own.claim_due(50, grace=600):
            mine.extend(e.external_id for e in batch)
        own.redis.close()

    threads = [threading.Thread(target=relay, args=(mine,)) for mine in claims]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert all(claims)  # both took part
    assert sorted(claims[0] + claims[1]) == sorted(everything)
    client.close()
