"""KrakenPayClient against the simulator: signed calls, typed errors, one kept-alive connection."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid

import aiohttp
import pytest

from kraken.pay import ClockNonce, Credentials, KrakenPayClient, normalize_external_id
from kraken.pay.errors import (
    AuthenticationError,
    ConfigurationError,
    InvalidNonce,
    InvalidRequest,
    MalformedResponse,
    PayRequestError,
    RateLimited,
    ServiceUnavailable,
    TemporaryLockout,
    TransportError,
)
from kraken.pay.simulator import DEMO_API_KEY, DEMO_API_SECRET

CREDS = Credentials(DEMO_API_KEY, DEMO_API_SECRET)


def new_id() -> str:
    return normalize_external_id(uuid.uuid4())


async def pending(sim, count: int = 1) -> list[str]:
    ids = [new_id() for _ in range(count)]
    sim.create_requests(ids)
    return ids


async def state(sim, eid: str) -> dict:
    return sim.request(eid)


async def stats(sim) -> dict:
    return sim.stats()


# ------------------------------------------------------------------------------ success


async def test_cancel_of_a_pending_request_returns_result_and_cancels_it(sim, client):
    (eid,) = await pending(sim)
    assert await client.cancel_request(eid) == {}
    assert (await state(sim, eid))["state"] == "cancelled"


async def test_cancel_accepts_a_uuid_and_sends_its_canonical_id(sim, client):
    value = uuid.uuid4()
    eid = normalize_external_id(value)
    sim.create_requests([eid])
    await client.cancel_request(value)
    assert (await state(sim, eid))["state"] == "cancelled"


async def test_n_sequential_cancels_open_one_tcp_connection(sim, client):
    ids = await pending(sim, 20)
    for eid in ids:
        await client.cancel_request(eid)
    assert (await stats(sim))["connections_opened"] == 1


async def test_the_wire_request_is_krakens_documented_shape(sim, client, caplog):
    (eid,) = await pending(sim)
    await client.cancel_request(eid)
    counts = await stats(sim)
    assert counts["signature_rejections"] == 0 and counts["cancels_applied"] == 1


# ------------------------------------------------------------------------------ Pay outcomes


@pytest.mark.parametrize(
    ("setup", "reason"),
    [("unknown", "not_found"), ("twice", "already_cancelled"), ("paid", "not_cancellable")],
)
async def test_pay_answers_are_pay_request_errors_with_a_reason(sim, client, setup, reason):
    eid = new_id()
    if setup == "twice":
        sim.create_requests([eid])
        await client.cancel_request(eid)
    elif setup == "paid":
        sim.create_requests([eid], state="paid")
    with pytest.raises(PayRequestError) as info:
        await client.cancel_request(eid)
    assert info.value.reason == reason
    assert not info.value.transient


# ------------------------------------------------------------------------------ auth


async def test_bad_key_is_an_authentication_error(sim):
    creds = Credentials("no-such-key", DEMO_API_SECRET)
    async with KrakenPayClient(creds, base_url=sim.url) as client:
        with pytest.raises(AuthenticationError, match="Invalid key"):
            await client.cancel_request(new_id())


async def test_bad_signature_is_an_authentication_error_that_hides_the_secret(sim):
    wrong_secret = "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo="
    creds = Credentials(DEMO_API_KEY, wrong_secret)
    async with KrakenPayClient(creds, base_url=sim.url) as client:
        with pytest.raises(AuthenticationError, match="Invalid signature") as info:
            await client.cancel_request(new_id())
    for text in (str(info.value), repr(info.value), json.dumps(info.value.to_dict())):
        assert wrong_secret not in text and DEMO_API_SECRET not in text
    assert (await stats(sim))["signature_rejections"] == 1


async def test_secret_never_in_client_repr_or_debug_logs(sim, client, caplog):
    (eid,) = await pending(sim)
    with caplog.at_level(logging.DEBUG):
        await client.cancel_request(eid)
    assert DEMO_API_SECRET not in repr(client)
    assert DEMO_API_SECRET not in caplog.text


# ------------------------------------------------------------------------------ faults


@pytest.mark.parametrize(
    ("fault", "error", "applied", "ambiguous"),
    [
        ("reset_before", TransportError, False, True),
        ("reset_after", TransportError, True, True),
        ("http_5xx", TransportError, False, True),
        ("malformed_json", MalformedResponse, True, True),
        ("rate_limit", RateLimited, False, False),
        ("service_unavailable", ServiceUnavailable, False, False),
        ("invalid_nonce", InvalidNonce, False, False),
        ("lockout", TemporaryLockout, False, False),
    ],
)
async def test_each_fault_becomes_its_typed_error(sim, client, fault, error, applied, ambiguous):
    (eid,) = await pending(sim)
    sim.set_faults({fault: {"next": 1}})
    with pytest.raises(error) as info:
        await client.cancel_request(eid)
    assert info.value.transient
    assert info.value.ambiguous is ambiguous
    expected = "cancelled" if applied else "pending"
    assert (await state(sim, eid))["state"] == expected
    # The fault was for one request only: the next call goes through or meets the outcome.
    if applied:
        with pytest.raises(PayRequestError):
            await client.cancel_request(eid)
    else:
        await client.cancel_request(eid)
    assert (await state(sim, eid))["state"] == "cancelled"


@pytest.mark.slow  # waits on purpose: make test-fast leaves it to make test
async def test_delay_past_the_timeout_is_an_ambiguous_transport_error(sim):
    (eid,) = await pending(sim)
    sim.set_faults({"delay": {"next": 1, "seconds": 0.3}})
    # No late-landing grace (it has tests of its own): the call fails at its timeout.
    quick = {"timeout": 0.1, "late_landing_grace": 0}
    async with KrakenPayClient(CREDS, base_url=sim.url, **quick) as client:
        with pytest.raises(TransportError, match="no answer within") as info:
            await client.cancel_request(eid)
    assert info.value.ambiguous
    deadline = asyncio.get_running_loop().time() + 5
    while (await state(sim, eid))["state"] != "cancelled":
        assert asyncio.get_running_loop().time() < deadline, "the delayed cancel never applied"
        await asyncio.sleep(0.02)


async def test_connection_refused_is_a_transport_error_that_sent_nothing():
    async with KrakenPayClient(CREDS, base_url="http://127.0.0.1:9", timeout=1) as client:
        with pytest.raises(TransportError, match="cannot connect") as info:
            await client.cancel_request(new_id())
    assert not info.value.ambiguous


class _FailingSession:
    """Stands in for aiohttp's session where a real network cannot produce the fault."""

    closed = False

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    def post(self, *args, **kwargs):
        raise self.exc

    async def close(self) -> None:
        self.closed = True


@pytest.mark.parametrize(
    ("exc", "ambiguous"),
    [
        (aiohttp.ConnectionTimeoutError(), False),  # a TimeoutError too, yet nothing went out
        (aiohttp.SocketTimeoutError(), True),
        (asyncio.TimeoutError(), True),
        (aiohttp.ServerDisconnectedError(), True),
    ],
)
async def test_timeouts_are_ambiguous_only_once_the_request_may_have_gone_out(exc, ambiguous):
    client = KrakenPayClient(CREDS, base_url="http://127.0.0.1:9", late_landing_grace=0)
    client._session = _FailingSession(exc)  # type: ignore[assignment]
    with pytest.raises(TransportError) as info:
        await client.cancel_request(new_id())
    assert info.value.ambiguous is ambiguous
    await client.close()


async def test_invalid_external_id_is_refused_before_anything_is_sent(sim, client):
    with pytest.raises(ValueError, match="external_id"):
        await client.cancel_request("not base64!")
    assert (await stats(sim))["requests"] == 0


async def test_invalid_arguments_from_kraken_are_invalid_request(sim, client):
    with pytest.raises(InvalidRequest):
        await client.private("/0/private/Pay/request/cancel", {"external_id": "YR"})


# ------------------------------------------------------------------------------ window mode


async def test_window_mode_re_signs_an_invalid_nonce_once(sim):
    (eid,) = await pending(sim)
    sim.set_faults({"invalid_nonce": {"next": 1}})
    async with KrakenPayClient(CREDS, base_url=sim.url, ordering="window") as client:
        assert await client.cancel_request(eid) == {}
    assert (await state(sim, eid))["state"] == "cancelled"


async def test_serial_mode_does_not_hide_an_invalid_nonce(sim, client):
    (eid,) = await pending(sim)
    sim.set_faults({"invalid_nonce": {"next": 1}})
    with pytest.raises(InvalidNonce):
        await client.cancel_request(eid)


# ------------------------------------------------------------------------------ configuration


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"ordering": "parallel"}, "ordering"), ({"timeout": 0}, "timeout")],
)
def test_bad_client_options_name_the_field(kwargs, field):
    with pytest.raises(ConfigurationError, match=field):
        KrakenPayClient(CREDS, **kwargs)


def test_credentials_must_be_credentials():
    with pytest.raises(ConfigurationError, match="credentials"):
        KrakenPayClient(("key", "secret"))  # type: ignore[arg-type]


def test_default_nonce_is_a_clock_nonce_and_base_url_is_krakens():
    client = KrakenPayClient(CREDS)
    assert isinstance(client.nonce, ClockNonce)
    assert client.base_url == "https://api.kraken.com"
