"""The simulator's status notifications, end to end over loopback sockets: a cancellation through
the API, a payment and an expiry through the controls, each reach an aiohttp receiver built on
``kraken.pay.webhooks`` signed with the simulator's own key; the hook sees each change once even
when delivered twice; non-2xx answers are retried; every token fault is refused for its reason.
"""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from webhook_support import await_until

from kraken.pay import KrakenPayClient, normalize_external_id
from kraken.pay.errors import PayRequestError
from kraken.pay.simulator import Simulator, SimulatorThread
from kraken.pay.webhooks import (
    MAX_BODY_BYTES,
    PayCallback,
    PayCallbackVerifier,
    aiohttp_handler,
    receive,
)


def new_id() -> str:
    return normalize_external_id(uuid.uuid4())


@dataclass
class Receiver:
    """A shop's endpoint: verifies with the simulator's JWKS, de-duplicates on notification_id.

    ``fail_next`` answers that many deliveries 500 first; ``hold`` keeps each delivery waiting
    until it is set; ``answers`` records every HTTP status sent back, in order.
    """

    verifier: PayCallbackVerifier
    url: str = ""
    deliveries: list[PayCallback] = field(default_factory=list)
    handled: dict[str, PayCallback] = field(default_factory=dict)
    answers: list[int] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    fail_next: int = 0
    hold: asyncio.Event | None = None

    def hook(self, callback: PayCallback) -> None:
        self.deliveries.append(callback)
        self.handled.setdefault(callback.notification_id, callback)  # a repeat changes nothing

    def statuses(self) -> list[tuple[str, str]]:
        return [(c.external_id, c.status) for c in self.handled.values()]

    async def endpoint(self, request: web.Request) -> web.StreamResponse:
        if self.hold is not None:
            await self.hold.wait()
        if self.fail_next:
            self.fail_next -= 1
            self.answers.append(500)
            return web.Response(status=500, text="try again later")
        response = await aiohttp_handler(self.verifier, self.hook)(request)
        self.answers.append(response.status)
        if response.status != 200:
            self.reasons.append(json.loads(response.body)["reason"])  # type: ignore[arg-type]
        return response


@pytest.fixture
def sim_options() -> dict[str, Any]:
    """Four delivery attempts, 10 ms apart: a failing receiver is given up on quickly."""
    return {"webhook_attempts": 4, "webhook_backoff": 0.01}


@pytest.fixture
async def receiver(sim: Simulator) -> AsyncIterator[Receiver]:
    shop = Receiver(PayCallbackVerifier(sim.jwks_url, timeout=2.0))
    app = web.Application()
    app.router.add_post("/kraken/pay/callback", shop.endpoint)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    shop.url = f"http://127.0.0.1:{runner.addresses[0][1]}/kraken/pay/callback"
    sim.register_webhook(shop.url)
    yield shop
    if shop.hold is not None:
        shop.hold.set()
    await runner.cleanup()


def pending(sim: Simulator | SimulatorThread, n: int = 1) -> list[str]:
    ids = [new_id() for _ in range(n)]
    sim.create_requests(ids)
    return ids


# ------------------------------------------------------------------------ each state change


async def test_every_state_change_reaches_the_hook_once_signed_by_the_simulator(
    sim: Simulator, receiver: Receiver, client: KrakenPayClient
) -> None:
    cancelled, paid, expired = pending(sim, 3)
    await client.cancel_request(cancelled)
    sim.pay(paid, "alice")
    sim.expire(expired)
    await sim.wait_webhooks()
    assert sorted(receiver.statuses()) == sorted(
        [(cancelled, "cancelled"), (paid, "success"), (expired, "expired")]
    )
    by_status = {c.status: c for c in receiver.handled.values()}
    assert by_status["success"].customer_kraktag == "alice"
    assert by_status["cancelled"].customer_kraktag is None
    assert receiver.answers == [200, 200, 200]
    assert receiver.verifier.fetches == 1  # the simulator's one key, fetched once
    stats = sim.stats()
    assert (stats["webhooks_sent"], stats["webhooks_acknowledged"], stats["webhooks_failed"]) == (
        3,
        3,
        0,
    )


async def test_a_refused_cancel_or_a_creation_sends_nothing(
    sim: Simulator, receiver: Receiver, client: KrakenPayClient
) -> None:
    (eid,) = pending(sim)
    sim.create_requests([new_id()], "paid")
    await client.cancel_request(eid)
    with pytest.raises(PayRequestError):
        await client.cancel_request(eid)  # already cancelled: no state change
    await sim.wait_webhooks()
    assert receiver.statuses() == [(eid, "cancelled")]
    assert sim.stats()["webhooks_notified"] == 1


async def test_duplicate_deliveries_reach_the_hook_twice_and_are_handled_once(
    sim: Simulator, receiver: Receiver
) -> None:
    sim.set_faults({"webhook_duplicate": {"next": 2}})
    first, second = pending(sim, 2)
    sim.pay(first)
    sim.expire(second)
    await sim.wait_webhooks()
    assert len(receiver.deliveries) == 4
    assert sorted(receiver.statuses()) == sorted([(first, "success"), (second, "expired")])
    assert sim.stats()["webhook_faults_injected"]["webhook_duplicate"] == 2


async def test_a_delivery_answered_non_2xx_is_retried_until_acknowledged(
    sim: Simulator, receiver: Receiver
) -> None:
    receiver.fail_next = 2
    (eid,) = pending(sim)
    sim.pay(eid)
    await sim.wait_webhooks()
    assert receiver.answers == [500, 500, 200]
    assert receiver.statuses() == [(eid, "success")]
    stats = sim.stats()
    assert (stats["webhooks_sent"], stats["webhooks_retried"], stats["webhooks_acknowledged"]) == (
        3,
        2,
        1,
    )


async def test_a_delivery_is_given_up_after_the_last_attempt(
    sim: Simulator, receiver: Receiver
) -> None:
    receiver.fail_next = 100
    (eid,) = pending(sim)
    sim.expire(eid)
    await sim.wait_webhooks()
    assert receiver.answers == [500] * 4  # webhook_attempts=4
    assert receiver.handled == {}
    assert (sim.stats()["webhooks_failed"], sim.stats()["webhooks_acknowledged"]) == (1, 0)


async def test_a_url_that_refuses_connections_is_retried_then_given_up(sim: Simulator) -> None:
    sim.register_webhook("http://127.0.0.1:9/nobody-listens")
    sim.pay(pending(sim)[0])
    await sim.wait_webhooks()
    stats = sim.stats()
    assert (stats["webhooks_sent"], stats["webhooks_failed"]) == (4, 1)


async def test_the_api_answer_never_waits_for_a_delivery(
    sim: Simulator, receiver: Receiver, client: KrakenPayClient
) -> None:
    receiver.hold = asyncio.Event()  # the shop's endpoint hangs
    (eid,) = pending(sim)
    assert await asyncio.wait_for(client.cancel_request(eid), 5.0) == {}
    await await_until(lambda: sim.stats()["webhooks_sent"] == 1, 5, "the delivery to start")
    assert receiver.handled == {}  # answered while the delivery is still held
    receiver.hold.set()
    await sim.wait_webhooks()
    assert receiver.statuses() == [(eid, "cancelled")]


@pytest.mark.slow  # waits on purpose: make test-fast leaves it to make test
async def test_a_delayed_delivery_arrives_after_its_delay(
    sim: Simulator, receiver: Receiver
) -> None:
    sim.set_faults({"webhook_delay": {"next": 1, "seconds": 0.5}})
    late, prompt = pending(sim, 2)
    sim.pay(late)
    sim.pay(prompt)
    await await_until(lambda: len(receiver.handled) == 1, 5, "the prompt delivery")
    assert receiver.statuses() == [(prompt, "success")]  # the delayed one is still waiting
    await sim.wait_webhooks()
    assert receiver.statuses() == [(prompt, "success"), (late, "success")]


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        ("webhook_expired", "expired"),
        ("webhook_unknown_key", "unknown_key"),
        ("webhook_bad_signature", "bad_signature"),
    ],
)
async def test_a_spoiled_token_is_refused_for_its_reason_and_reaches_no_hook(
    sim: Simulator, receiver: Receiver, fault: str, reason: str
) -> None:
    sim.set_faults({fault: {"next": 1}})
    spoiled, fine = pending(sim, 2)
    sim.pay(spoiled)
    sim.pay(fine)
    await sim.wait_webhooks()
    assert receiver.statuses() == [(fine, "success")]
    assert set(receiver.reasons) == {reason}
    assert sim.stats()["webhooks_failed"] == 1  # every attempt was refused with a 400


# ------------------------------------------------------------------------ controls


async def test_the_jwks_is_served_and_verifies_the_simulator_s_tokens(sim: Simulator) -> None:
    async with aiohttp.ClientSession() as http, http.get(sim.jwks_url) as response:
        served = await response.json()
    assert served == sim.jwks()
    (key,) = served["keys"]
    assert (key["kty"], key["crv"], key["alg"]) == ("EC", "P-256", "ES256") and "d" not in key


async def test_controls_over_http(sim: Simulator) -> None:
    eid, other = pending(sim, 2)
    async with aiohttp.ClientSession() as http:
        async with http.post(sim.url + "/_sim/webhooks", json={"url": "ftp://x"}) as response:
            assert response.status == 400
            assert (await response.json())["error"].startswith("url: must be an absolute http")
        async with http.post(
            sim.url + "/_sim/webhooks", json={"url": "http://127.0.0.1:9/hook"}
        ) as response:
            assert (response.status, await response.json()) == (
                201,
                {"urls": ["http://127.0.0.1:9/hook"]},
            )
        body = {"external_id": eid, "customer_kraktag": "bob"}
        async with http.post(sim.url + "/_sim/requests/pay", json=body) as response:
            assert (await response.json())["state"] == "paid"
        async with http.post(sim.url + "/_sim/requests/expire", json=body) as response:
            assert response.status == 409
            assert (await response.json())["error"].startswith("state: only a pending request")
        async with http.post(
            sim.url + "/_sim/requests/expire", json={"external_id": new_id()}
        ) as response:
            assert response.status == 404
        async with http.post(sim.url + "/_sim/requests/expire", json={"external_id": other}):
            pass
        async with http.delete(sim.url + "/_sim/webhooks") as response:
            assert await response.json() == {"urls": []}
    assert sim.request(other)["state"] == "expired" and sim.webhooks() == []


async def test_webhook_faults_are_set_listed_and_cleared_with_the_others(sim: Simulator) -> None:
    sim.set_faults({"reset_before": {"next": 1}, "webhook_delay": {"rate": 0.5, "seconds": 1}})
    assert sim.faults() == {
        "reset_before": {"next": 1},
        "webhook_delay": {"rate": 0.5, "seconds": 1},
    }
    with pytest.raises(ValueError, match=r"^webhook_nope: unknown fault kind"):
        sim.set_faults({"webhook_nope": {"next": 1}})
    assert "webhook_delay" in sim.faults()  # a bad spec changes nothing
    sim.clear_faults()
    assert sim.faults() == {}


async def test_reset_forgets_the_urls(sim: Simulator, receiver: Receiver) -> None:
    sim.reset()
    sim.pay(pending(sim)[0])
    await sim.wait_webhooks()
    assert sim.webhooks() == [] and sim.stats()["webhooks_sent"] == 0


class _SyncShop(BaseHTTPRequestHandler):
    """A synchronous endpoint built on ``receive``, as a Django view or a Flask route would be."""

    verifier: PayCallbackVerifier
    seen: list[PayCallback]

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(min(length, MAX_BODY_BYTES + 1))
        reply = receive(body, self.headers.get("Content-Type"), self.verifier, self.seen.append)
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.end_headers()
        self.wfile.write(reply.json())

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass


def test_simulator_thread_notifies_a_synchronous_receiver() -> None:
    with SimulatorThread(webhook_backoff=0.01) as sim:
        seen: list[PayCallback] = []
        handler = type(
            "Shop", (_SyncShop,), {"verifier": PayCallbackVerifier(sim.jwks_url), "seen": seen}
        )
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        # A short poll: shutdown() returns within it, not within serve_forever's 0.5 s.
        thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
        thread.start()
        try:
            url = f"http://127.0.0.1:{server.server_address[1]}/kraken/pay/callback"
            assert sim.register_webhook(url) == [url]
            (eid,) = pending(sim)
            assert sim.pay(eid, None)["state"] == "paid"
            sim.wait_webhooks(10)
            assert [(c.external_id, c.status, c.customer_kraktag) for c in seen] == [
                (eid, "success", None)
            ]
            assert sim.stats()["webhooks_acknowledged"] == 1
        finally:
            server.shutdown()
            server.server_close()
