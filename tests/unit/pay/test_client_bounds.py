"""The client's own bounds: the size of an answer, the payload's fields, its numeric settings.

The answers come from ``kraken``, a local stand-in for Kraken (tests/unit/pay/conftest.py).
"""

from __future__ import annotations

import math
import tracemalloc

import pytest

from kraken.pay import ClockNonce, Credentials, KrakenPayClient
from kraken.pay.bounds import DEFAULT_MAX_RESPONSE_BYTES
from kraken.pay.errors import ConfigurationError, InvalidRequest, MalformedResponse
from kraken.pay.simulator import DEMO_API_KEY, DEMO_API_SECRET

CREDS = Credentials(DEMO_API_KEY, DEMO_API_SECRET)


# ----------------------------------------------------------------------------- answers


def test_the_default_cap_on_an_answer_is_4_mib():
    assert DEFAULT_MAX_RESPONSE_BYTES == 4 << 20
    assert KrakenPayClient(CREDS).max_response_bytes == 4 << 20


async def test_an_800_mib_answer_is_cut_at_the_cap_in_bounded_memory(kraken):
    kraken.answer = "stream"
    async with KrakenPayClient(CREDS, base_url=kraken.url, max_response_bytes=1 << 20) as client:
        tracemalloc.start()
        try:
            with pytest.raises(MalformedResponse) as info:
                await client.cancel_request("AAAAAAAAAAE")
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert str(info.value) == "HTTP 200: answer larger than max_response_bytes=1,048,576 (more)"
    assert info.value.ambiguous  # Kraken answered: it may have cancelled
    assert info.value.transient
    assert peak < 8 << 20  # the cap and a few pieces, not 800 MiB (1.6 GiB measured before)


@pytest.mark.slow  # waits on purpose: make test-fast leaves it to make test
async def test_a_gzip_bomb_is_cut_at_the_cap_once_decompressed(kraken):
    kraken.answer = "gzip"
    async with KrakenPayClient(CREDS, base_url=kraken.url) as client:
        tracemalloc.start()
        try:
            with pytest.raises(MalformedResponse, match=r"max_response_bytes=4,194,304 \(more\)"):
                await client.cancel_request("AAAAAAAAAAE")
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert peak < 16 << 20  # 200 MiB once decompressed


async def test_an_answer_announced_larger_than_the_cap_is_not_read(kraken):
    kraken.answer = "announced"
    async with KrakenPayClient(CREDS, base_url=kraken.url) as client:
        with pytest.raises(MalformedResponse, match=r"\(104,857,600 bytes announced\)$") as info:
            await client.cancel_request("AAAAAAAAAAE")
    assert info.value.ambiguous
    assert "max_response_bytes=4,194,304" in info.value.message


async def test_after_a_too_large_answer_the_next_call_works(kraken):
    kraken.answer = "stream"
    async with KrakenPayClient(CREDS, base_url=kraken.url, max_response_bytes=4096) as client:
        with pytest.raises(MalformedResponse):
            await client.cancel_request("AAAAAAAAAAE")
        kraken.answer = "ok"
        assert await client.cancel_request("AAAAAAAAAAE") == {}
    assert kraken.calls == 2


async def test_an_answer_at_the_cap_is_read(kraken):
    async with KrakenPayClient(CREDS, base_url=kraken.url, max_response_bytes=1024) as client:
        assert await client.cancel_request("AAAAAAAAAAE") == {}


# ----------------------------------------------------------------------------- payloads


class CountingNonce(ClockNonce):
    def __init__(self) -> None:
        super().__init__()
        self.drawn = 0

    async def next(self) -> int:
        self.drawn += 1
        return await super().next()


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"nonce": "1", "external_id": "AAAAAAAAAAE"}, "payload: 'nonce' is the client's own"),
        (["external_id"], "payload: must be a mapping, not list"),
        ({"amount": math.nan}, "payload: must be JSON without NaN or infinity"),
        ({"amount": math.inf}, "payload: must be JSON without NaN or infinity"),
        ({"when": object()}, "payload: must be JSON without NaN or infinity"),
    ],
)
async def test_a_bad_payload_is_refused_before_anything_is_drawn_or_sent(kraken, payload, message):
    nonce = CountingNonce()
    async with KrakenPayClient(CREDS, base_url=kraken.url, nonce=nonce) as client:
        with pytest.raises(InvalidRequest, match=f"^{message}") as info:
            await client.private("/0/private/Pay/request/cancel", payload)
    assert "\n" not in str(info.value)
    assert not info.value.transient
    assert (kraken.calls, nonce.drawn) == (0, 0)


async def test_a_good_payload_still_goes_with_the_clients_nonce(kraken):
    async with KrakenPayClient(CREDS, base_url=kraken.url) as client:
        assert await client.private("/0/private/Pay/request/cancel", {"external_id": "AQ"}) == {}
    assert kraken.calls == 1


# ----------------------------------------------------------------------------- settings


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("timeout", math.inf),
        ("timeout", math.nan),
        ("timeout", 0),
        ("timeout", -1),
        ("timeout", 601),
        ("timeout", "10"),
        ("timeout", True),
        ("connect_timeout", math.inf),
        ("connect_timeout", 0),
        ("max_connections", -1),
        ("max_connections", 0),
        ("max_connections", 10_001),
        ("max_connections", 2.5),
        ("max_connections", math.inf),
        ("max_response_bytes", 0),
        ("max_response_bytes", 2 << 30),
        ("max_response_bytes", math.inf),
        ("max_retry_after", -1),
        ("max_retry_after", math.inf),
        ("max_retry_after", math.nan),
        ("max_retry_after", 86_401),
    ],
)
def test_a_setting_out_of_bounds_is_one_line_naming_the_argument(field, value):
    with pytest.raises(ConfigurationError) as info:
        KrakenPayClient(CREDS, **{field: value})
    message = str(info.value)
    assert message.startswith(f"{field}: must be ")
    assert message.endswith(f"not {value!r}")
    assert "\n" not in message


@pytest.mark.parametrize("grace", [-1, "3", True, 601])
def test_a_bad_grace_is_refused_naming_the_field(grace):
    with pytest.raises(ConfigurationError, match="late_landing_grace"):
        KrakenPayClient(CREDS, late_landing_grace=grace)


def test_settings_within_bounds_are_kept():
    client = KrakenPayClient(
        CREDS,
        timeout=600,
        connect_timeout=None,
        max_connections=1,
        max_response_bytes=1024,
        max_retry_after=0,
    )
    assert (client.timeout, client.max_response_bytes, client.max_retry_after) == (600, 1024, 0)
