"""The Kraken Pay simulator: Kraken's checks in Kraken's order, faults on demand, control paths.

Requests are crafted with plain aiohttp and ``kraken.pay.signing.sign``, so these tests say what
the wire looks like without depending on the client.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from yarl import URL

from kraken.pay.errors import PayRequestError, parse_response
from kraken.pay.external_id import normalize_external_id
from kraken.pay.signing import sign
from kraken.pay.simulator import DEMO_API_KEY, DEMO_API_SECRET, Simulator, SimulatorThread
from kraken.pay.simulator.cli import main as cli_main
from kraken.pay.simulator.faults import Faults
from kraken.pay.simulator.state import NonceGuard

CANCEL = "/0/private/Pay/request/cancel"
OK = {"error": [], "result": {}}
OTHER_SECRET = base64.b64encode(bytes(range(64))).decode()

_nonces = itertools.count(1)  # simulators are fresh per test, so any increasing source works


def new_id() -> str:
    return normalize_external_id(uuid.uuid4())


def signed(
    payload: dict[str, Any], *, key: str = DEMO_API_KEY, secret: str = DEMO_API_SECRET
) -> tuple[bytes, dict[str, str]]:
    """The body and headers Kraken expects, signed over the nonce the body carries."""
    body = json.dumps(payload).encode()
    signature = sign(CANCEL, str(payload.get("nonce", "")), body, secret)
    headers = {"API-Key": key, "API-Sign": signature, "Content-Type": "application/json"}
    return body, headers


def cancel_call(eid: Any, nonce: int | str | None = None, **kw: str) -> tuple[bytes, dict]:
    return signed(
        {"nonce": str(next(_nonces) if nonce is None else nonce), "external_id": eid}, **kw
    )


async def post(
    http: aiohttp.ClientSession,
    sim: Simulator,
    body: bytes,
    headers: dict[str, str],
    *,
    timeout: float | None = None,
    path: str = CANCEL,
) -> tuple[int, bytes]:
    client_timeout = aiohttp.ClientTimeout(total=timeout)
    async with http.post(sim.url + path, data=body, headers=headers, timeout=client_timeout) as r:
        return r.status, await r.read()


async def answer(
    http: aiohttp.ClientSession,
    sim: Simulator,
    body: bytes,
    headers: dict[str, str],
    path: str = CANCEL,
) -> dict:
    """Kraken answers every check with HTTP 200 and its JSON envelope."""
    status, raw = await post(http, sim, body, headers, path=path)
    assert status == 200
    return json.loads(raw)


async def cancel(http: aiohttp.ClientSession, sim: Simulator, eid: Any, **kw: Any) -> dict:
    return await answer(http, sim, *cancel_call(eid, **kw))


def pending(sim: Simulator | SimulatorThread, count: int = 1, state: str = "pending") -> list[str]:
    ids = [new_id() for _ in range(count)]
    sim.create_requests(ids, state)
    return ids


def pay_error_type(envelope: dict) -> str:
    (error,) = envelope["error"]
    assert error["severity"] == "E" and error["errorClass"] == "EPay"
    return error["type"]


async def eventually(check: Callable[[], bool], within: float = 5.0) -> None:
    """Poll ``check`` until it holds, failing after ``within`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not check():
        assert loop.time() < deadline, "condition not met before the deadline"
        await asyncio.sleep(0.01)


# ------------------------------------------------------------------------------ Pay outcomes


async def test_cancel_of_a_pending_request_cancels_it(sim, http):
    (eid,) = pending(sim)
    assert await cancel(http, sim, eid) == OK
    assert sim.request(eid) == {"external_id": eid, "state": "cancelled", "cancel_calls": 1}
    assert sim.stats()["cancels_applied"] == 1


async def test_second_cancel_is_request_already_cancelled(sim, http):
    (eid,) = pending(sim)
    await cancel(http, sim, eid)
    envelope = await cancel(http, sim, eid)
    assert pay_error_type(envelope) == "RequestAlreadyCancelled"
    assert sim.request(eid)["cancel_calls"] == 2
    assert sim.stats()["repeated_cancels"] == 1


@pytest.mark.parametrize(
    ("state", "error_type", "reason"),
    [
        (None, "RequestNotFound", "not_found"),
        ("paid", "RequestNotCancellable", "not_cancellable"),
        ("expired", "RequestNotCancellable", "not_cancellable"),
        ("cancelled", "RequestAlreadyCancelled", "already_cancelled"),
    ],
)
async def test_pay_refusals_are_structured_errors_the_library_understands(
    sim, http, state, error_type, reason
):
    eid = new_id() if state is None else pending(sim, state=state)[0]
    status, body = await post(http, sim, *cancel_call(eid))
    assert pay_error_type(json.loads(body)) == error_type
    with pytest.raises(PayRequestError) as info:
        parse_response(status, body)
    assert info.value.reason == reason
    expected = None if state is None else {"external_id": eid, "state": state, "cancel_calls": 1}
    assert sim.request(eid) == expected


async def test_unknown_private_path_is_unknown_method(sim, http):
    envelope = await answer(http, sim, *cancel_call(new_id()), path="/0/private/Pay/nope")
    assert envelope == {"error": ["EGeneral:Unknown method"]}


# ------------------------------------------------------------------------------ key, signature


@pytest.mark.parametrize("key", ["no-such-key", None])
async def test_unknown_or_missing_key_is_invalid_key(sim, http, key):
    (eid,) = pending(sim)
    body, headers = cancel_call(eid, key=key or "")
    if key is None:
        del headers["API-Key"]
    assert await post(http, sim, body, headers) == (200, b'{"error":["EAPI:Invalid key"]}')
    assert sim.request(eid)["state"] == "pending"
    assert sim.stats()["key_rejections"] == 1


@pytest.mark.parametrize("tamper", ["wrong secret", "other body", "no header"])
async def test_bad_signature_is_invalid_signature(sim, http, tamper):
    (eid,) = pending(sim)
    body, headers = cancel_call(
        eid, secret=OTHER_SECRET if tamper == "wrong secret" else DEMO_API_SECRET
    )
    if tamper == "other body":
        body = body.replace(b'"nonce"', b' "nonce"')
    elif tamper == "no header":
        del headers["API-Sign"]
    assert await answer(http, sim, body, headers) == {"error": ["EAPI:Invalid signature"]}
    assert sim.request(eid)["state"] == "pending"
    assert sim.stats()["signature_rejections"] == 1


# ------------------------------------------------------------------------------ nonces


async def test_replayed_or_lower_nonce_is_invalid_nonce(sim, http):
    first, replay, lower = pending(sim, 3)
    assert await cancel(http, sim, first, nonce=1000) == OK
    assert await cancel(http, sim, replay, nonce=1000) == {"error": ["EAPI:Invalid nonce"]}
    assert await cancel(http, sim, lower, nonce=999) == {"error": ["EAPI:Invalid nonce"]}
    assert [sim.request(e)["state"] for e in (replay, lower)] == ["pending", "pending"]
    assert sim.stats()["nonce_rejections"] == 2


async def test_nonce_may_be_a_json_number(sim, http):
    (eid,) = pending(sim)
    body, headers = signed({"nonce": 77, "external_id": eid})
    assert await answer(http, sim, body, headers) == OK


@pytest.mark.parametrize("nonce", ["abc", "-5", "0", None])
async def test_missing_or_non_numeric_nonce_is_invalid_nonce(sim, http, nonce):
    (eid,) = pending(sim)
    payload = {"external_id": eid} if nonce is None else {"nonce": nonce, "external_id": eid}
    assert await answer(http, sim, *signed(payload)) == {"error": ["EAPI:Invalid nonce"]}
    assert sim.stats()["nonce_rejections"] == 1


async def test_body_that_is_not_a_json_object_is_invalid_arguments(sim, http):
    headers = {"API-Key": DEMO_API_KEY, "API-Sign": "x"}
    for body in (b"nonce=1&external_id=QQ", b"[1, 2]"):
        envelope = await answer(http, sim, body, headers)
        assert envelope == {"error": ["EGeneral:Invalid arguments"]}
    assert sim.stats()["invalid_arguments"] == 2


async def test_nonce_window_accepts_out_of_order_once_and_only_within_the_window(http):
    async with Simulator(nonce_window=10) as sim:
        ids = pending(sim, 5)
        answers = [
            await cancel(http, sim, eid, nonce=nonce)
            for eid, nonce in zip(ids, [100, 95, 95, 90, 91], strict=True)
        ]
    rejected = {"error": ["EAPI:Invalid nonce"]}
    assert answers == [OK, OK, rejected, rejected, OK]  # 95 reused; 90 is not above 100 - 10


def test_nonce_memory_is_bounded_and_never_accepts_a_forgotten_nonce():
    guard = NonceGuard(window=1000, memory=2)
    assert [guard.accept("k", n) for n in (10, 11, 12)] == [True, True, True]
    assert not guard.accept("k", 10)  # forgotten, so refused rather than risk a replay
    assert guard.accept("k", 5) is False  # below what was forgotten
    assert guard.accept("k", 13)


# ------------------------------------------------------------------------------ rate, arguments


async def test_rate_limit_empties_a_bucket_per_key(http):
    keys = {DEMO_API_KEY: DEMO_API_SECRET, "second": OTHER_SECRET}
    async with Simulator(keys, rate_limit=(2, 0.001)) as sim:
        ids = pending(sim, 4)
        answers = [await cancel(http, sim, eid) for eid in ids[:3]]
        other_key = await cancel(http, sim, ids[3], key="second", secret=OTHER_SECRET)
        assert answers[2] == {"error": ["EAPI:Rate limit exceeded"]}
        assert answers[:2] == [OK, OK] and other_key == OK
        assert sim.request(ids[2])["state"] == "pending"
        assert sim.stats()["rate_limited"] == 1


@pytest.mark.parametrize("eid", ["YR", "YQ==", "not base64!", "A" * 24, 12345, None])
async def test_invalid_external_id_is_invalid_arguments(sim, http, eid):
    payload = {"nonce": "1"} if eid is None else {"nonce": "1", "external_id": eid}
    envelope = await answer(http, sim, *signed(payload))
    assert envelope == {"error": ["EGeneral:Invalid arguments:external_id"]}
    assert sim.stats()["invalid_arguments"] == 1


# ------------------------------------------------------------------------------ faults


async def test_reset_before_drops_the_connection_without_processing(sim, http):
    (eid,) = pending(sim)
    sim.set_faults({"reset_before": {"next": 1}})
    with pytest.raises(aiohttp.ClientConnectionError):
        await post(http, sim, *cancel_call(eid))
    assert sim.request(eid)["cancel_calls"] == 0
    assert sim.stats()["faults_injected"]["reset_before"] == 1
    assert await cancel(http, sim, eid) == OK  # the fault was for one call only


async def test_reset_after_drops_the_connection_after_processing(sim, http):
    (eid,) = pending(sim)
    sim.set_faults({"reset_after": {"next": 1}})
    with pytest.raises(aiohttp.ClientConnectionError):
        await post(http, sim, *cancel_call(eid))
    assert sim.request(eid) == {"external_id": eid, "state": "cancelled", "cancel_calls": 1}


@pytest.mark.slow  # waits on purpose: make test-fast leaves it to make test
async def test_delay_past_the_client_timeout_still_cancels(sim, http):
    (eid,) = pending(sim)
    sim.set_faults({"delay": {"next": 1, "seconds": 0.5}})
    with pytest.raises(asyncio.TimeoutError):
        await post(http, sim, *cancel_call(eid), timeout=0.05)
    assert sim.request(eid)["state"] == "pending"  # still sleeping when the client gave up
    await eventually(lambda: sim.request(eid)["state"] == "cancelled")


async def test_stopping_wakes_a_delayed_call_instead_of_waiting_it_out(http):
    sim = Simulator()
    await sim.start()
    (eid,) = pending(sim)
    sim.set_faults({"delay": {"next": 1, "seconds": 60}})
    call = asyncio.create_task(post(http, sim, *cancel_call(eid)))
    await eventually(lambda: sim.stats()["requests"] == 1)
    await asyncio.wait_for(sim.stop(), timeout=5)
    with pytest.raises(aiohttp.ClientConnectionError):
        await call
    assert sim.request(eid)["state"] == "pending"


@pytest.mark.parametrize(("settings", "status"), [({}, 502), ({"status": 520}, 520)])
async def test_http_5xx_is_an_html_page_without_processing(sim, http, settings, status):
    (eid,) = pending(sim)
    sim.set_faults({"http_5xx": {"next": 1, **settings}})
    async with http.post(sim.url + CANCEL, data=b"{}") as response:
        page = await response.text()
        assert response.status == status
        assert response.content_type == "text/html"
    assert f"<title>{status} " in page and "cloudflare" in page
    assert sim.request(eid)["cancel_calls"] == 0


async def test_malformed_json_is_answered_after_processing(sim, http):
    (eid,) = pending(sim)
    sim.set_faults({"malformed_json": {"next": 1}})
    status, body = await post(http, sim, *cancel_call(eid))
    assert status == 200
    with pytest.raises(ValueError):
        json.loads(body)
    assert sim.request(eid)["state"] == "cancelled"


@pytest.mark.parametrize(
    ("kind", "code"),
    [
        ("rate_limit", "EAPI:Rate limit exceeded"),
        ("service_unavailable", "EService:Unavailable"),
        ("invalid_nonce", "EAPI:Invalid nonce"),
        ("lockout", "EGeneral:Temporary lockout"),
    ],
)
async def test_error_faults_answer_krakens_error_without_processing(sim, http, kind, code):
    (eid,) = pending(sim)
    sim.set_faults({kind: {"next": 1}})
    call = cancel_call(eid)
    assert await answer(http, sim, *call) == {"error": [code]}
    assert sim.request(eid)["cancel_calls"] == 0
    # Not processed at all: even the nonce was not spent, so the very same call now works.
    assert await answer(http, sim, *call) == OK


async def test_next_n_applies_to_exactly_n_calls(sim, http):
    ids = pending(sim, 5)
    sim.set_faults({"service_unavailable": {"next": 3}})
    answers = [await cancel(http, sim, eid) for eid in ids]
    assert answers == [{"error": ["EService:Unavailable"]}] * 3 + [OK] * 2
    assert sim.stats()["faults_injected"]["service_unavailable"] == 3
    assert sim.faults() == {}  # used up


async def test_at_most_one_fault_per_call_in_a_fixed_order(sim, http):
    first, second = pending(sim, 2)
    sim.set_faults({"lockout": {"next": 1}, "reset_before": {"next": 1}})
    with pytest.raises(aiohttp.ClientConnectionError):
        await post(http, sim, *cancel_call(first))
    assert await cancel(http, sim, second) == {"error": ["EGeneral:Temporary lockout"]}
    assert await cancel(http, sim, second) == OK


def test_rate_with_a_seed_fires_for_about_that_share_and_reproducibly():
    def pattern(seed: int) -> list[bool]:
        faults = Faults(seed)
        faults.set({"http_5xx": {"rate": 0.25}})
        return [faults.draw() is not None for _ in range(4000)]

    first = pattern(seed=11)
    assert 0.22 < sum(first) / len(first) < 0.28
    assert pattern(seed=11) == first
    assert pattern(seed=12) != first


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"explode": {"next": 1}}, "explode"),
        ({"delay": {"rate": 2}}, "delay.rate"),
        ({"delay": {"next": -1}}, "delay.next"),
        ({"delay": {"next": 1, "seconds": "3"}}, "delay.seconds"),
        ({"http_5xx": {"next": 1, "status": 404}}, "http_5xx.status"),
        ({"lockout": {"next": 1, "seconds": 1}}, "lockout.seconds"),
        ({"lockout": {"rate": True}}, "lockout.rate"),
        ({"lockout": {}}, "lockout"),
        ({"lockout": 1}, "lockout"),
    ],
)
async def test_bad_fault_spec_is_400_naming_the_field_and_changes_nothing(sim, http, spec, field):
    sim.set_faults({"reset_after": {"rate": 0.5}})
    async with http.post(sim.url + "/_sim/faults", json=spec) as response:
        assert response.status == 400
        assert (await response.json())["error"].startswith(f"{field}:")
    assert sim.faults() == {"reset_after": {"rate": 0.5}}


async def test_faults_over_http_can_be_set_shown_and_cleared(sim, http):
    spec = {"delay": {"next": 2, "seconds": 1.5}, "http_5xx": {"rate": 0.1}}
    async with http.post(sim.url + "/_sim/faults", json=spec) as response:
        assert response.status == 200
    async with http.get(sim.url + "/_sim/faults") as response:
        assert await response.json() == {**spec, "http_5xx": {"rate": 0.1, "status": 502}}
    async with http.delete(sim.url + "/_sim/faults") as response:
        assert response.status == 200
    assert sim.faults() == {}


async def test_control_paths_are_never_faulted(sim, http):
    sim.set_faults({"reset_before": {"rate": 1.0}})
    async with http.post(sim.url + "/_sim/requests", json={"external_id": new_id()}) as response:
        assert response.status == 201
    async with http.get(sim.url + "/_sim/stats") as response:
        assert (await response.json())["requests"] == 0


# ------------------------------------------------------------------------------ connections


async def test_sequential_calls_on_one_kept_alive_session_open_one_connection(sim, http):
    for eid in pending(sim, 5):
        assert await cancel(http, sim, eid) == OK
    assert sim.stats()["connections_opened"] == 1


async def test_force_close_opens_one_connection_per_call(sim):
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as http:
        for eid in pending(sim, 5):
            assert await cancel(http, sim, eid) == OK
    assert sim.stats()["connections_opened"] == 5


# ------------------------------------------------------------------------------ control paths


async def test_created_request_is_readable_with_an_url_encoded_plus(sim, http):
    eid = normalize_external_id(b"\xfb\xef\xbe\xfb\xff\xbf")
    assert "+" in eid and "/" in eid
    async with http.post(sim.url + "/_sim/requests", json={"external_id": eid}) as response:
        assert (response.status, await response.json()) == (201, {"created": 1})
    query = "external_id=" + eid.replace("+", "%2B").replace("/", "%2F")
    async with http.get(URL(f"{sim.url}/_sim/requests?{query}", encoded=True)) as response:
        assert await response.json() == {"external_id": eid, "state": "pending", "cancel_calls": 0}
    async with http.get(sim.url + "/_sim/requests", params={"external_id": eid}) as response:
        assert (await response.json())["external_id"] == eid


async def test_reading_an_unknown_request_is_404_and_a_bad_id_400(sim, http):
    async with http.get(sim.url + "/_sim/requests", params={"external_id": new_id()}) as response:
        assert response.status == 404
    async with http.get(sim.url + "/_sim/requests", params={"external_id": "YR"}) as response:
        assert response.status == 400
        assert (await response.json())["error"].startswith("external_id:")


async def test_bulk_creation_and_summary_prove_exactly_once(sim, http):
    ids = [new_id() for _ in range(5000)]
    async with http.post(sim.url + "/_sim/requests", json={"external_ids": ids}) as response:
        assert (response.status, await response.json()) == (201, {"created": 5000})
    for eid in ids[:3]:
        await cancel(http, sim, eid)
    await cancel(http, sim, ids[0])
    async with http.get(sim.url + "/_sim/requests/summary") as response:
        summary = await response.json()
    assert summary == {
        "total": 5000,
        "by_state": {"pending": 4997, "cancelled": 3},
        "cancel_calls": {"0": 4997, "1": 2, ">1": 1},
    }


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"external_ids": "QQ"}, "external_ids"),
        ({"external_ids": ["QQ", "bad!"]}, "external_ids[1]"),
        ({"external_id": "QQ", "state": "lost"}, "state"),
        ({"external_id": "YR"}, "external_id"),
        ({}, "external_id"),
        ([1], "body"),
    ],
)
async def test_bad_creation_is_400_naming_the_field_and_creates_nothing(sim, http, payload, field):
    async with http.post(sim.url + "/_sim/requests", json=payload) as response:
        assert response.status == 400
        assert (await response.json())["error"].startswith(f"{field}:")
    assert sim.summary()["total"] == 0


async def test_stats_over_http_and_reset_forgets_everything(sim, http):
    (eid,) = pending(sim)
    await cancel(http, sim, eid, nonce=50)
    sim.set_faults({"lockout": {"rate": 0.5}})
    async with http.get(sim.url + "/_sim/stats") as response:
        counts = await response.json()
    assert (counts["requests"], counts["cancels_applied"], counts["connections_opened"]) == (
        1,
        1,
        1,
    )
    async with http.post(sim.url + "/_sim/reset") as response:
        assert response.status == 200
    assert sim.request(eid) is None and sim.faults() == {}
    assert sim.stats()["cancels_applied"] == 0
    (again,) = pending(sim)
    assert await cancel(http, sim, again, nonce=1) == OK  # nonce history is gone too


# ------------------------------------------------------------------------------ other runners


def urllib_cancel(url: str, eid: str, **kw: Any) -> dict:
    body, headers = cancel_call(eid, **kw)
    request = urllib.request.Request(url + CANCEL, data=body, headers=headers, method="POST")
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())


def test_simulator_thread_serves_synchronous_code_and_stops():
    with SimulatorThread(seed=1) as sim:
        (eid,) = pending(sim)
        assert urllib_cancel(sim.url, eid) == OK
        assert sim.request(eid)["state"] == "cancelled"
        assert sim.stats()["cancels_applied"] == 1
        url = sim.url
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(url + "/_sim/stats", timeout=2)


def test_simulator_thread_reports_a_port_it_cannot_bind():
    with SimulatorThread() as first, pytest.raises(OSError):
        SimulatorThread(port=first.port).start()


def test_command_refuses_a_key_without_a_secret_and_a_bad_secret_quietly(capsys):
    assert cli_main(["--key", "lonely"]) == 2
    not_base64 = "not*base64*secret"
    assert cli_main(["--port", "0", "--key", "k", "--secret", not_base64]) == 2
    errors = capsys.readouterr().err
    assert "api_secret" in errors and not_base64 not in errors


async def test_cancelled_at_records_when_each_request_was_cancelled_once(sim, http):
    first, second, untouched = ids = [new_id() for _ in range(3)]
    sim.create_requests(ids)
    before = time.time()
    await cancel(http, sim, first)
    await cancel(http, sim, second)
    after = time.time()
    await cancel(http, sim, first)  # already cancelled: the moment stays the first one
    moments = sim.cancelled_at()
    assert sorted(moments) == sorted([first, second])
    assert before <= moments[first] <= moments[second] <= after
    assert untouched not in moments
