"""Simulator options for benchmarks: answers held by a latency, form bodies for classic clients."""

from __future__ import annotations

import time
import urllib.parse
import uuid

import aiohttp
import pytest

from kraken.pay import Credentials, KrakenPayClient, normalize_external_id
from kraken.pay.client import CANCEL_REQUEST_PATH
from kraken.pay.simulator import DEMO_API_KEY, DEMO_API_SECRET, Simulator
from kraken.pay.simulator.cli import _parser

CREDS = Credentials(DEMO_API_KEY, DEMO_API_SECRET)


async def _form_cancel(sim: Simulator, eid: str, nonce: int) -> dict:
    body = urllib.parse.urlencode({"nonce": nonce, "external_id": eid}).encode()
    headers = {
        "API-Key": DEMO_API_KEY,
        "API-Sign": CREDS.sign(CANCEL_REQUEST_PATH, nonce, body),
        "Content-Type": "application/x-www-form-urlencoded",
    }
    url = sim.url + CANCEL_REQUEST_PATH
    async with aiohttp.ClientSession() as http, http.post(url, data=body, headers=headers) as r:
        return await r.json()


@pytest.mark.parametrize(("accept_form", "applied"), [(False, 0), (True, 1)])
async def test_a_form_body_is_a_cancel_only_with_accept_form(accept_form, applied):
    eid = normalize_external_id(uuid.uuid4())
    async with Simulator(accept_form=accept_form) as sim:
        sim.create_requests([eid])
        answer = await _form_cancel(sim, eid, time.time_ns())
        assert sim.stats()["cancels_applied"] == applied
        assert (answer["error"] == []) is bool(applied)


async def test_latency_holds_each_answer_and_the_call_still_applies():
    eid = normalize_external_id(uuid.uuid4())
    async with Simulator(latency=(0.2, 0.2)) as sim:
        sim.create_requests([eid])
        async with KrakenPayClient(CREDS, base_url=sim.url) as client:
            started = time.perf_counter()
            await client.cancel_request(eid)
            assert time.perf_counter() - started >= 0.2
        assert sim.request(eid)["state"] == "cancelled"


def test_bad_latency_is_refused_naming_the_field():
    with pytest.raises(ValueError, match="latency"):
        Simulator(latency=(0.5, 0.1))
    with pytest.raises(SystemExit):
        _parser().parse_args(["--latency", "fast"])
    assert _parser().parse_args(["--latency", "20:50"]).latency == (0.02, 0.05)
