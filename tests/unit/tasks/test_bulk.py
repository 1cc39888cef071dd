"""tasks/bulk.py without a broker: splitting on the caller's side, and one chunk on a loop."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter

import pytest
from fake_client import ScriptedClient, pay_error

from kraken.pay import normalize_external_id
from kraken.pay.errors import (
    AuthenticationError,
    InvalidRequest,
    RateLimited,
    ServiceUnavailable,
    TemporaryLockout,
    TransportError,
)
from tasks import bulk, lanes
from tasks.bulk import MAX_CHUNK, bulk_cancel, bulk_signature, cancel_many, split
from tasks.celery import app
from tasks.retry import RetryPolicy

QUICK = RetryPolicy(base_delay=0.001, max_delay=0.01)


def new_ids(n: int) -> list[str]:
    return [normalize_external_id(uuid.uuid4()) for _ in range(n)]


async def run_chunk(client: ScriptedClient, ids: list[str], **options) -> bulk.ChunkProgress:
    return await cancel_many(client, ids, **{"policy": QUICK, "concurrency": 4, **options})


# ---------------------------------------------------------------- the caller's side


def test_ids_are_split_by_position_into_chunks_of_the_given_size():
    ids = new_ids(25)
    chunks = list(split(ids, 10))
    assert [chunk for chunk, _ in chunks] == [ids[:10], ids[10:20], ids[20:]]
    assert [seed["total"] for _, seed in chunks] == [10, 10, 5]
    assert [seed["accepted"] for _, seed in chunks] == [10, 10, 5]


def test_bad_ids_are_reported_by_position_and_reason_and_the_good_ones_still_go():
    good = new_ids(3)
    values = [good[0], "not base64!", good[1], 2**70, good[2]]
    (ids, seed), *rest = split(values, 10)
    assert rest == []
    assert ids == good
    assert seed["invalid"] == [
        {
            "position": 1,
            "value": "'not base64!'",
            "error": "external_id: must be base64 (A-Z, a-z, 0-9, '+', '/') without padding",
        },
        {
            "position": 3,
            "value": repr(2**70),
            "error": "external_id: an int must fit in 64 bits unsigned (0 to 2**64 - 1)",
        },
    ]
    assert (seed["total"], seed["accepted"]) == (5, 3)


def test_a_bad_value_is_shown_shortened():
    ((_, seed),) = split(["x" * 500], 10)
    assert len(seed["invalid"][0]["value"]) == 40


def test_a_repeated_id_is_cancelled_once_and_counted_as_a_duplicate():
    eid = uuid.uuid4()
    chunks = list(split([eid, normalize_external_id(eid), eid], 2))
    assert [ids for ids, _ in chunks] == [[normalize_external_id(eid)], []]
    assert sum(seed["duplicates"] for _, seed in chunks) == 2


def test_any_iterable_is_read_once_as_it_is_split():
    ids = new_ids(5)
    chunks = list(split(iter(ids), 2))
    assert [chunk for chunk, _ in chunks] == [ids[:2], ids[2:4], ids[4:]]


def test_an_empty_list_is_one_empty_chunk_so_the_summary_still_comes():
    assert list(split([], 10)) == [([], bulk.empty_summary())]


def test_no_message_carries_more_than_max_chunk_ids():
    signature = bulk_signature(app, new_ids(12_000), chunk_size=100_000)
    sizes = [len(task.args[0]) for task in signature.tasks]
    assert sizes == [MAX_CHUNK, MAX_CHUNK, 2_000]
    assert signature.body.args == ()  # the summary's message carries no ids


def test_the_queue_given_to_delay_reaches_the_chunks_and_the_summary():
    signature = bulk_signature(app, new_ids(3), chunk_size=2, queue="cancels")
    queues = {task.options["queue"] for task in signature.tasks}
    assert queues == {"cancels"}
    assert signature.body.options["queue"] == "cancels"


@pytest.mark.parametrize("bad", ["AAAAAAAAAAE", b"\x00" * 8, {"a": 1}, 7, None])
def test_delay_refuses_anything_but_a_collection_of_ids_and_sends_nothing(monkeypatch, bad):
    sent = []
    monkeypatch.setattr(app, "send_task", lambda *a, **kw: sent.append(a))
    with pytest.raises(TypeError, match=r"^external_ids: must be a list of ids"):
        bulk_cancel.delay(bad)
    assert sent == []


def test_delay_without_ids_is_refused():
    with pytest.raises(TypeError, match="external_ids: is required"):
        bulk_cancel.apply_async()


def test_summaries_of_chunks_add_up():
    first = {**bulk.empty_summary(), "total": 2, "accepted": 1, "handed_off": 1}
    first["invalid"] = [{"position": 7, "value": "'x'", "error": "e"}]
    second = {**bulk.empty_summary(), "total": 1, "accepted": 1}
    second["outcomes"] = {**second["outcomes"], "cancelled": 1}
    second["invalid"] = [{"position": 3, "value": "'y'", "error": "e"}]
    total = bulk.merge([first, second])
    assert (total["total"], total["accepted"], total["handed_off"]) == (3, 2, 1)
    assert total["outcomes"]["cancelled"] == 1
    assert [item["position"] for item in total["invalid"]] == [3, 7]


# ---------------------------------------------------------------- one chunk on the event loop


async def test_a_chunk_keeps_at_most_concurrency_calls_in_flight():
    client = ScriptedClient(latency=0.001)
    progress = await run_chunk(client, new_ids(200), concurrency=8)
    assert client.peak == 8
    assert progress.outcomes["cancelled"] == 200


async def test_a_huge_chunk_builds_one_coroutine_per_lane_not_per_id():
    client = ScriptedClient()
    ids = [normalize_external_id(i) for i in range(20_000)]  # 4 times the largest chunk
    seen = 0

    async def watch() -> None:
        nonlocal seen
        while True:
            seen = max(seen, len(asyncio.all_tasks()))
            await asyncio.sleep(0)

    watcher = asyncio.ensure_future(watch())
    progress = await run_chunk(client, ids, concurrency=8)
    watcher.cancel()
    assert progress.outcomes["cancelled"] == 20_000
    assert seen <= 8 + 2  # the lanes, the test itself and the watcher


@pytest.mark.parametrize(
    ("answer", "outcome"),
    [
        ({}, "cancelled"),
        (pay_error("RequestAlreadyCancelled"), "already_cancelled"),
        (pay_error("RequestNotCancellable"), "not_cancellable"),
        (pay_error("RequestNotFound"), "not_found"),
    ],
)
async def test_what_kraken_says_about_a_request_is_its_outcome(answer, outcome):
    (eid,) = new_ids(1)
    progress = await run_chunk(ScriptedClient(script={eid: [answer]}), [eid])
    assert progress.outcomes[outcome] == 1
    assert sum(progress.outcomes.values()) == 1


async def test_already_cancelled_after_an_ambiguous_attempt_is_cancelled():
    (eid,) = new_ids(1)
    client = ScriptedClient(
        script={
            eid: [TransportError("reset", ambiguous=True), pay_error("RequestAlreadyCancelled")]
        }
    )
    progress = await run_chunk(client, [eid])
    assert progress.outcomes["cancelled"] == 1
    assert progress.outcomes["already_cancelled"] == 0


async def test_already_cancelled_for_an_id_that_was_ambiguous_before_the_chunk_is_cancelled():
    (eid,) = new_ids(1)
    client = ScriptedClient(script={eid: [pay_error("RequestAlreadyCancelled")]})
    progress = await run_chunk(client, [eid], ambiguous=frozenset([eid]))
    assert progress.outcomes["cancelled"] == 1


async def test_a_transient_error_is_retried_inside_the_chunk():
    (eid,) = new_ids(1)
    client = ScriptedClient(
        script={eid: [ServiceUnavailable("busy"), TransportError("refused"), {}]}
    )
    progress = await run_chunk(client, [eid])
    assert progress.outcomes["cancelled"] == 1
    assert client.calls.count(eid) == 3
    assert progress.handoffs == []


async def test_an_id_still_failing_after_the_quick_attempts_is_handed_off_with_its_ambiguity():
    clean, unclear = new_ids(2)
    client = ScriptedClient(
        script={
            clean: [TransportError("refused")] * 5,
            unclear: [TransportError("reset", ambiguous=True)] + [TransportError("refused")] * 4,
        }
    )
    progress = await run_chunk(client, [clean, unclear])
    assert sorted((eid, amb) for eid, amb, _ in progress.handoffs) == sorted(
        [(clean, False), (unclear, True)]
    )
    assert Counter(client.calls) == {clean: lanes.QUICK_ATTEMPTS, unclear: lanes.QUICK_ATTEMPTS}
    assert sum(progress.outcomes.values()) == 0


async def test_a_terminal_error_fails_that_id_with_its_error_and_the_others_go_on():
    bad, good = new_ids(2)
    client = ScriptedClient(script={bad: [InvalidRequest("EGeneral:Invalid arguments")]})
    progress = await run_chunk(client, [bad, good])
    assert progress.failed == [
        {"external_id": bad, "error": "InvalidRequest: EGeneral:Invalid arguments"}
    ]
    assert progress.outcomes["cancelled"] == 1


async def test_a_refused_key_stops_the_chunk_and_fails_the_rest_without_calls():
    ids = new_ids(10)
    client = ScriptedClient(script={eid: [AuthenticationError("EAPI:Invalid key")] for eid in ids})
    progress = await run_chunk(client, ids, concurrency=1)
    assert len(client.calls) == 1
    assert [f["external_id"] for f in progress.failed] == ids
    assert {f["error"] for f in progress.failed} == {"AuthenticationError: EAPI:Invalid key"}


async def test_a_rate_limit_pauses_every_lane_and_spends_no_attempt():
    ids = new_ids(4)
    first = ids[0]
    script = {first: [RateLimited("budget", retry_after=0.05)] * 4}
    client = ScriptedClient(script=script)
    loop = asyncio.get_running_loop()
    started = loop.time()
    progress = await run_chunk(client, ids, concurrency=4)
    assert progress.outcomes["cancelled"] == 4  # four rate limits, more than QUICK_ATTEMPTS
    assert progress.handoffs == []
    assert loop.time() - started >= 4 * 0.05


async def test_a_lockout_longer_than_the_window_carries_the_whole_chunk_for_later():
    ids = new_ids(20)
    client = ScriptedClient(script={ids[0]: [TemporaryLockout("EGeneral:Temporary lockout")]})
    policy = RetryPolicy(base_delay=1.0)  # a lockout pauses 30 s at least
    progress = await run_chunk(client, ids, concurrency=1, window=5.0, policy=policy)
    assert len(client.calls) == 1
    assert [eid for eid, _ in progress.carried] == ids
    assert progress.paused_until - asyncio.get_running_loop().time() >= 25


async def test_ids_not_started_within_the_window_are_carried_with_their_ambiguity():
    ids = new_ids(50)
    client = ScriptedClient(latency=0.02)
    progress = await run_chunk(
        client, ids, concurrency=2, window=0.05, ambiguous=frozenset(ids[-1:])
    )
    done = sum(progress.outcomes.values())
    assert 0 < done < 50
    assert len(progress.carried) == 50 - done
    assert progress.carried[-1] == (ids[-1], True)
    assert len(client.calls) == done


# ---------------------------------------------------------------- the tasks, in eager mode


@pytest.fixture
def kraken(kraken_settings, scripted):
    """``kraken(script)``: a ScriptedClient answering from that per-id script is the process's
    client; chunks of 3, two lanes, quick retries."""
    kraken_settings(bulk_chunk=3, bulk_concurrency=2, retry_base_delay=0.001)
    return lambda script=None: scripted(script=script or {})


@pytest.fixture
def handed_off(monkeypatch, ledger):
    """The ``cancel_request`` messages a chunk sends: (id, the ledger's entry for it)."""
    sent: list[tuple[str, dict]] = []

    def send(args, **options):
        entry = ledger.entry(args[0])
        sent.append((args[0], {"ambiguous": entry.ambiguous}))

    monkeypatch.setattr(app.tasks["kraken_pay.cancel_request"], "apply_async", send)
    return sent


def test_bulk_cancel_returns_one_summary_of_every_chunk(kraken, handed_off):
    ids = new_ids(7)
    failing = ids[1]
    kraken(
        {
            ids[0]: [pay_error("RequestNotFound")],
            failing: [TransportError("reset", ambiguous=True)] * lanes.QUICK_ATTEMPTS,
            ids[2]: [InvalidRequest("EGeneral:Invalid arguments")],
        }
    )

    summary = bulk_cancel.apply(args=([*ids, "not base64!", ids[3]],)).get()

    assert summary == {
        "total": 9,
        "accepted": 7,
        "duplicates": 1,
        "invalid": [
            {
                "position": 7,
                "value": "'not base64!'",
                "error": "external_id: must be base64 (A-Z, a-z, 0-9, '+', '/') without padding",
            }
        ],
        "outcomes": {"cancelled": 4, "already_cancelled": 0, "not_cancellable": 0, "not_found": 1},
        "failed": [{"external_id": ids[2], "error": "InvalidRequest: EGeneral:Invalid arguments"}],
        "handed_off": 1,
    }
    assert [(eid, state["ambiguous"]) for eid, state in handed_off] == [(failing, True)]


def test_a_chunk_whose_window_ends_continues_in_a_retry_and_its_summary_adds_up(
    kraken, handed_off, monkeypatch
):
    ids = new_ids(3)
    client = kraken({ids[0]: [TransportError("reset", ambiguous=True)]})
    windows = iter([0.0, 60.0])  # the first run starts nothing; the retry does the work
    monkeypatch.setattr(bulk, "chunk_window", lambda settings, visibility: next(windows))

    summary = bulk_cancel.apply(args=(ids,)).get()

    assert summary["outcomes"]["cancelled"] == 3
    assert (summary["total"], summary["accepted"], summary["handed_off"]) == (3, 3, 0)
    assert Counter(client.calls) == {ids[0]: 2, ids[1]: 1, ids[2]: 1}


def test_a_redelivered_chunk_reads_already_cancelled_as_its_own_work(kraken, handed_off):
    ids = new_ids(2)
    kraken({eid: [pay_error("RequestAlreadyCancelled")] for eid in ids})
    bulk.cancel_chunk.push_request(delivery_info={"redelivered": True})  # its worker died
    try:
        result = bulk.cancel_chunk(ids)
    finally:
        bulk.cancel_chunk.pop_request()
    assert result["outcomes"]["cancelled"] == 2


def test_a_first_delivery_reports_already_cancelled_as_it_is(kraken, handed_off):
    ids = new_ids(2)
    kraken({eid: [pay_error("RequestAlreadyCancelled")] for eid in ids})
    result = bulk.cancel_chunk.apply(args=(ids,)).get()
    assert result["outcomes"]["already_cancelled"] == 2
