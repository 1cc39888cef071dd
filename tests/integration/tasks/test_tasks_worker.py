"""cancel_request through real workers, a real Redis broker and the simulator.

One prefork worker (concurrency 2) serves the module; tests that need another configuration
(bad credentials, another pool) start their own. Retry delays are tiny and the client's
timeout is 1 s, so every fault resolves in well under a second or two.
"""

from __future__ import annotations

import uuid

import pytest
import redis
from tasks_support import unique, wait_for

from kraken.pay import InvalidExternalId, normalize_external_id
from kraken.pay.errors import AuthenticationError, InvalidRequest
from kraken.pay.simulator import DEMO_API_SECRET
from tasks import cancel_request

RESULT_TIMEOUT = 30

# A well-formed secret that is not the simulator's: every signature made with it is wrong.
WRONG_SECRET = "c29tZSBvdGhlciBzZWNyZXQgdGhhdCBpcyBub3QgdGhlIGRlbW8ga2V5J3M="


def new_ids(n: int = 1) -> list[str]:
    return [normalize_external_id(uuid.uuid4()) for _ in range(n)]


def cancel(eid: str) -> dict:
    return cancel_request.delay(eid).get(timeout=RESULT_TIMEOUT)


# ------------------------------------------------------------------ the happy path


def test_delay_cancels_the_request_in_the_simulator(sim, worker):
    (eid,) = new_ids()
    sim.create_requests([eid])

    result = cancel(eid)

    assert result == {
        "external_id": eid,
        "outcome": "cancelled",
        "attempts": 1,
        "confirmed_on_retry": False,
        "result": {},
        "error": None,
    }
    assert sim.request(eid) == {"external_id": eid, "state": "cancelled", "cancel_calls": 1}


def test_a_uuid_is_queued_as_its_canonical_id(sim, worker):
    value = uuid.uuid4()
    sim.create_requests([value])
    result = cancel_request.delay(value).get(timeout=RESULT_TIMEOUT)
    assert result["external_id"] == normalize_external_id(value)
    assert sim.request(value)["state"] == "cancelled"


# ------------------------------------------------------------------ transient faults

TRANSIENT_FAULTS = {
    "reset_before": {"reset_before": {"next": 1}},
    "reset_after": {"reset_after": {"next": 1}},
    "delay_past_timeout": {"delay": {"next": 1, "seconds": 2.0}},  # KRAKEN_TIMEOUT=1
    "http_5xx_html": {"http_5xx": {"next": 2, "status": 520}},
    "malformed_json": {"malformed_json": {"next": 1}},
    "rate_limit": {"rate_limit": {"next": 2}},
    "service_unavailable": {"service_unavailable": {"next": 2}},
    "invalid_nonce": {"invalid_nonce": {"next": 1}},
}


@pytest.mark.parametrize("fault", list(TRANSIENT_FAULTS))
def test_each_transient_fault_ends_cancelled_with_one_cancel_applied(sim, worker, fault):
    (eid,) = new_ids()
    sim.create_requests([eid])
    before = sim.stats()
    sim.set_faults(TRANSIENT_FAULTS[fault])

    result = cancel(eid)

    after = sim.stats()
    assert result["outcome"] == "cancelled"
    assert result["attempts"] >= 2
    assert sim.request(eid)["state"] == "cancelled"
    assert after["cancels_applied"] - before["cancels_applied"] == 1
    if fault in ("reset_after", "malformed_json"):
        # Kraken cancelled on the first call; the retry's "already cancelled" confirms it.
        assert result["confirmed_on_retry"] is True
    if fault == "delay_past_timeout":
        # The slow first call still lands (and, its nonce now stale, is refused): wait for it
        # so that it does not leak into the next test's counts.
        wait_for(
            lambda: (
                sim.stats()["requests"] - before["requests"] >= 2
                and sim.faults() == {}
                and sim.stats()["nonce_rejections"] + sim.stats()["repeated_cancels"]
                > before["nonce_rejections"] + before["repeated_cancels"]
            ),
            timeout=10,
            what="the delayed call to land",
        )


# ------------------------------------------------------------------ outcomes


@pytest.mark.parametrize(
    ("state", "outcome"),
    [(None, "not_found"), ("cancelled", "already_cancelled"), ("paid", "not_cancellable")],
)
def test_what_kraken_says_about_the_request_is_an_outcome_after_one_call(
    sim, worker, state, outcome
):
    (eid,) = new_ids()
    if state is not None:
        sim.create_requests([eid], state=state)
    before = sim.stats()["requests"]

    result = cancel(eid)

    assert (result["outcome"], result["attempts"]) == (outcome, 1)
    assert sim.stats()["requests"] - before == 1


# ------------------------------------------------------------------ terminal errors

TERMINAL = {
    "bad_key": (
        {"KRAKEN_API_KEY": "no-such-key", "KRAKEN_API_SECRET": DEMO_API_SECRET},
        AuthenticationError,
        "key_rejections",
    ),
    "bad_signature": (
        {"KRAKEN_API_SECRET": WRONG_SECRET},
        AuthenticationError,
        "signature_rejections",
    ),
    # The simulator refuses a path it does not know with "EGeneral:Unknown method", an
    # InvalidRequest like "EGeneral:Invalid arguments" (which our client, validating every
    # id, cannot provoke).
    "invalid_request": ({"KRAKEN_API_URL": "{sim}/0/x"}, InvalidRequest, None),
}


@pytest.mark.parametrize("case", list(TERMINAL))
def test_each_terminal_error_fails_at_once_after_one_request(
    sim, environment, running_worker, case
):
    overrides, error, counter = TERMINAL[case]
    overrides = {k: v.format(sim=sim.url) for k, v in overrides.items()}
    own_queue = unique(f"q-{case}")
    (eid,) = new_ids()
    sim.create_requests([eid])
    with running_worker(
        environment | overrides, queue=own_queue, pool="solo", concurrency=1
    ) as node:
        before = sim.stats()

        with pytest.raises(error):
            cancel_request.apply_async((eid,), queue=own_queue).get(timeout=RESULT_TIMEOUT)

        after = sim.stats()
    assert after["requests"] - before["requests"] == 1
    if counter:
        assert after[counter] - before[counter] == 1
    assert sim.request(eid)["state"] == "pending"
    failures = [line for line in node.log().splitlines() if "cancel_request failed" in line]
    assert len(failures) == 1 and eid in failures[0]


def test_a_bad_id_that_bypasses_delay_fails_in_the_worker_without_a_request(sim, worker, client):
    before = sim.stats()["requests"]
    result = client.send_task("kraken_pay.cancel_request", args=["not an id!"])
    with pytest.raises(InvalidExternalId):
        result.get(timeout=RESULT_TIMEOUT)
    assert sim.stats()["requests"] == before


# ------------------------------------------------------------------ validation at enqueue


@pytest.mark.parametrize("bad", ["", "a=", "not base64!", "A" * 23, -1, 2**64, None])
def test_delay_refuses_a_bad_id_and_nothing_reaches_the_broker(client, broker_url, bad):
    empty_queue = unique("q-nobody")  # no worker consumes it: whatever is sent stays there
    broker = redis.Redis.from_url(broker_url)
    try:
        with pytest.raises(InvalidExternalId):
            cancel_request.apply_async((bad,), queue=empty_queue)
        with pytest.raises(InvalidExternalId):
            cancel_request.delay(bad)
        assert broker.llen(empty_queue) == 0

        cancel_request.apply_async(new_ids(), queue=empty_queue)  # the control: a good id
        assert broker.llen(empty_queue) == 1
    finally:
        broker.delete(empty_queue)
        broker.close()


# ------------------------------------------------------------------ pools and connections


@pytest.mark.parametrize("pool", ["threads", "solo"])
def test_the_threads_and_solo_pools_cancel_too(sim, environment, running_worker, pool):
    own_queue = unique(f"q-{pool}")
    concurrency = 4 if pool == "threads" else 1
    ids = new_ids(20)
    sim.create_requests(ids)
    with running_worker(environment, queue=own_queue, pool=pool, concurrency=concurrency):
        results = [cancel_request.apply_async((eid,), queue=own_queue) for eid in ids]
        outcomes = [r.get(timeout=RESULT_TIMEOUT)["outcome"] for r in results]
    assert outcomes == ["cancelled"] * len(ids)
    assert all(sim.request(eid)["state"] == "cancelled" for eid in ids)


def test_200_tasks_open_no_more_connections_than_the_pool_size(sim, environment, running_worker):
    pool_size = 2
    own_queue = unique("q-conns")
    ids = new_ids(200)
    sim.create_requests(ids)
    with running_worker(environment, queue=own_queue, pool="prefork", concurrency=pool_size):
        before = sim.stats()["connections_opened"]
        results = [cancel_request.apply_async((eid,), queue=own_queue) for eid in ids]
        outcomes = {r.get(timeout=RESULT_TIMEOUT)["outcome"] for r in results}
        opened = sim.stats()["connections_opened"] - before
    assert outcomes == {"cancelled"}
    assert 1 <= opened <= pool_size


# ------------------------------------------------------------------ the secret


def _redis_dump(url: str) -> bytes:
    """Every key and value of one Redis database, as bytes."""
    client = redis.Redis.from_url(url)
    chunks: list[bytes] = []
    try:
        for key in client.scan_iter(count=1000):
            chunks.append(key)
            kind = client.type(key)
            if kind == b"string":
                chunks.append(client.get(key) or b"")
            elif kind == b"hash":
                for field, value in client.hgetall(key).items():
                    chunks += [field, value]
            elif kind == b"list":
                chunks += client.lrange(key, 0, -1)
            elif kind == b"set":
                chunks += list(client.smembers(key))
            elif kind == b"zset":
                chunks += [member for member, _ in client.zrange(key, 0, -1, withscores=True)]
    finally:
        client.close()
    return b"\n".join(chunks)


def test_the_secret_appears_in_no_log_and_no_broker_or_backend_key(
    sim, worker, broker_url, tasks_redis_url, log_dir
):
    ok, refused, faulty = new_ids(3)
    sim.create_requests([ok, faulty])
    sim.create_requests([refused], state="paid")
    cancel(ok)
    cancel(refused)
    sim.set_faults({"http_5xx": {"next": 1}})
    cancel(faulty)

    secrets = [DEMO_API_SECRET.encode(), WRONG_SECRET.encode()]
    logs = b"".join(path.read_bytes() for path in log_dir.glob("*.log"))
    assert logs  # the workers did write their logs there
    stored = _redis_dump(broker_url) + _redis_dump(tasks_redis_url)
    assert stored
    for secret in secrets:
        assert secret not in logs
        assert secret not in stored


def test_a_malformed_message_is_rejected_and_the_worker_keeps_serving(client, queue, worker, sim):
    with client.producer_or_acquire() as producer:
        producer.publish(
            {"a": 1},
            routing_key=queue,
            serializer="json",
            headers={"task": "kraken_pay.cancel_request", "id": unique("forged"), "lang": "py"},
        )
    eid = new_ids()[0]
    sim.create_requests([eid])
    outcome = cancel_request.apply_async((eid,), queue=queue).get(timeout=RESULT_TIMEOUT)
    assert outcome["outcome"] == "cancelled"
    worker.check_alive()
    assert "the message body is not [args, kwargs, embed]" in worker.log()
