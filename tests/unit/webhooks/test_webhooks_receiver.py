"""The receiver: a verified notification reaches the hook and gets the guide's 200 answer; a bad
one answers 4xx and reaches nothing; the body size is bounded; aiohttp mounts it in one line."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from webhook_support import Key, claims

from kraken.pay.webhooks import (
    MAX_BODY_BYTES,
    PayCallback,
    PayCallbackVerifier,
    Reply,
    aiohttp_handler,
    areceive,
    receive,
)

UNREACHABLE_JWKS = "http://127.0.0.1:9/.well-known/pay-callback-keys.json"  # discard port: refused


def test_a_valid_notification_reaches_the_hook_and_answers_success(
    verifier: PayCallbackVerifier, key: Key
) -> None:
    seen: list[PayCallback] = []
    reply = receive(key.sign(claims()).encode(), "application/jwt", verifier, seen.append)
    assert (reply.status, reply.body) == (200, {"code": "Success"})
    assert json.loads(reply.json()) == {"code": "Success"}
    assert [(c.external_id, c.status) for c in seen] == [("GSoAAAAAAAA", "success")]
    assert reply.callback == seen[0]


def test_a_token_sent_as_a_json_string_is_accepted(verifier: PayCallbackVerifier, key: Key) -> None:
    seen: list[PayCallback] = []
    body = json.dumps(key.sign(claims())).encode()
    assert receive(body, "application/json; charset=utf-8", verifier, seen.append).status == 200
    assert len(seen) == 1


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        (lambda k: Key("intruder").sign(claims()), "unknown_key"),
        (lambda k: k.sign(claims(exp=int(time.time()) - 7200)), "expired"),
        (lambda k: k.sign(claims(iss="someone")), "wrong_issuer"),
        (lambda k: "not a token", "not_a_jwt"),
        (lambda k: k.sign(claims(status="refunded")), "bad_claim"),
    ],
)
def test_a_bad_token_answers_400_with_its_reason_and_reaches_no_hook(
    verifier: PayCallbackVerifier, key: Key, token: Any, reason: str
) -> None:
    seen: list[PayCallback] = []
    reply = receive(token(key).encode(), None, verifier, seen.append)
    assert reply.status == 400
    assert reply.body["reason"] == reason
    assert reply.body["error"].startswith(f"{reason}: ")
    assert seen == [] and reply.callback is None


def test_a_body_over_the_bound_answers_413_before_verifying(key: Key) -> None:
    class Untouchable(PayCallbackVerifier):
        def verify(self, token: str | bytes) -> PayCallback:
            raise AssertionError("an oversized body must not be verified")

    seen: list[PayCallback] = []
    reply = receive(b"x" * (MAX_BODY_BYTES + 1), None, Untouchable(UNREACHABLE_JWKS), seen.append)
    assert reply == Reply(413, {"error": f"body: must be at most {MAX_BODY_BYTES} bytes"})
    assert seen == []


def test_keys_that_cannot_be_fetched_answer_503_so_kraken_sends_again(key: Key) -> None:
    verifier = PayCallbackVerifier(UNREACHABLE_JWKS, timeout=1.0)
    seen: list[PayCallback] = []
    reply = receive(key.sign(claims()).encode(), None, verifier, seen.append)
    assert reply.status == 503
    assert reply.body["reason"] == "jwks_unavailable"
    assert seen == []


def test_an_error_in_the_hook_propagates_so_the_framework_answers_500(
    verifier: PayCallbackVerifier, key: Key
) -> None:
    def hook(callback: PayCallback) -> None:
        raise RuntimeError("database down")

    with pytest.raises(RuntimeError, match="database down"):
        receive(key.sign(claims()).encode(), None, verifier, hook)


def test_a_coroutine_hook_given_to_the_sync_receive_is_refused(
    verifier: PayCallbackVerifier, key: Key
) -> None:
    async def hook(callback: PayCallback) -> None:
        raise AssertionError("never run")

    with pytest.raises(TypeError, match="use areceive"):
        receive(key.sign(claims()).encode(), None, verifier, hook)


async def test_areceive_awaits_a_coroutine_hook(verifier: PayCallbackVerifier, key: Key) -> None:
    seen: list[str] = []

    async def hook(callback: PayCallback) -> None:
        seen.append(callback.status)

    reply = await areceive(key.sign(claims(status="expired")).encode(), None, verifier, hook)
    assert reply.status == 200 and seen == ["expired"]


# ------------------------------------------------------------------------ aiohttp


@pytest.fixture
async def endpoint(
    verifier: PayCallbackVerifier,
) -> AsyncIterator[tuple[str, list[PayCallback]]]:
    seen: list[PayCallback] = []
    app = web.Application()
    app.router.add_post("/kraken/pay/callback", aiohttp_handler(verifier, seen.append))
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}/kraken/pay/callback", seen
    await runner.cleanup()


async def test_the_aiohttp_handler_answers_success_and_hands_the_callback_on(
    endpoint: tuple[str, list[PayCallback]], key: Key
) -> None:
    url, seen = endpoint
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=key.sign(claims(status="cancelled", kraktag=None))) as response,
    ):
        assert response.status == 200
        assert response.content_type == "application/json"
        assert await response.json() == {"code": "Success"}
    assert [c.status for c in seen] == ["cancelled"]


async def test_the_aiohttp_handler_refuses_a_forgery_with_400(
    endpoint: tuple[str, list[PayCallback]], key: Key
) -> None:
    url, seen = endpoint
    header, _, signature = key.sign(claims(status="failed")).split(".")
    _, body, _ = key.sign(claims(status="success")).split(".")
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=f"{header}.{body}.{signature}") as response,
    ):
        assert response.status == 400
        assert (await response.json())["reason"] == "bad_signature"
    assert seen == []


async def test_the_aiohttp_handler_bounds_the_body_with_or_without_a_length(
    endpoint: tuple[str, list[PayCallback]],
) -> None:
    url, seen = endpoint

    async def chunks() -> AsyncIterator[bytes]:  # chunked: no Content-Length to go by
        for _ in range(10):
            yield b"x" * 4096

    async with aiohttp.ClientSession() as session:
        async with session.post(url, data=b"x" * (MAX_BODY_BYTES + 1)) as response:
            assert response.status == 413
        async with session.post(url, data=chunks()) as response:
            assert response.status == 413
            assert (await response.json())["error"].startswith("body: must be at most")
    assert seen == []
