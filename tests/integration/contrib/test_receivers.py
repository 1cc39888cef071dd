"""The receivers of tasks.contrib (Django, Flask, aiohttp): verify, queue, answer.

Each runs in this process against a real JWKS server and a real Redis broker: a notification
that verifies is answered Kraken's 200 and leaves one ``kraken_pay.handle_callback`` message
(JSON, the callback's dict) on the library's queue; a forged one is answered 400 and leaves
none; a body past the bound 413; a broker that does not answer 503, so Kraken sends it again.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator

import pytest
import redis
from aiohttp.test_utils import TestClient, TestServer
from tasks_support import client_app, unique
from webhook_support import JwksServer, Key, claims

from tasks.contrib import receiver
from tasks.settings import Settings, override

SUCCESS = {"code": "Success"}

Post = Callable[[bytes], tuple[int, dict]]


@pytest.fixture(scope="module")
def key() -> Key:
    return Key("kraken-test-1")


@pytest.fixture(scope="module")
def jwks(key) -> Iterator[JwksServer]:
    with JwksServer(key) as server:
        yield server


@pytest.fixture
def callbacks(broker_url, redis_url, jwks) -> Iterator[tuple[str, redis.Redis]]:
    """The standalone app on the test broker, with a queue of this test alone and the test
    JWKS: the queue's name, and a client of the broker to read it."""
    from tasks.celery import app

    name = unique("callbacks")
    with client_app(app, broker_url=broker_url, result_backend=broker_url, task_default_queue=name):
        override(app, Settings(queue=name, jwks_url=jwks.url, redis_url=redis_url))
        client = redis.Redis.from_url(broker_url)
        try:
            yield name, client
        finally:
            client.delete(name)
            client.close()


@pytest.fixture
def dead_broker(jwks) -> Iterator[None]:
    from tasks.celery import app

    # Nothing listens on port 1 of loopback: every publish is refused at once.
    dead = "redis://127.0.0.1:1/0"
    with client_app(app, broker_url=dead, result_backend=dead, task_default_queue="nowhere"):
        override(app, Settings(queue="nowhere", jwks_url=jwks.url))
        yield


def queued(callbacks: tuple[str, redis.Redis]) -> list[dict]:
    """The handle_callback messages on the queue: their task name and argument."""
    name, client = callbacks
    found = []
    for raw in client.lrange(name, 0, -1):
        message = json.loads(raw)
        body = json.loads(base64.b64decode(message["body"]))
        assert message["content-type"] == "application/json"
        found.append({"task": message["headers"]["task"], "callback": body[0][0]})
    return found


def django_post() -> Post:
    import django
    from django.conf import settings

    if not settings.configured:
        settings.configure(ALLOWED_HOSTS=["testserver"], ROOT_URLCONF=__name__)
        django.setup()
    from django.test import RequestFactory

    from tasks.contrib.django import pay_callback_view

    def post(body: bytes) -> tuple[int, dict]:
        request = RequestFactory().post("/kraken/callbacks", body, content_type="application/jwt")
        response = pay_callback_view(request)
        return response.status_code, json.loads(response.content)

    return post


def flask_post() -> Post:
    from flask import Flask

    from tasks.contrib.flask import pay_callbacks

    app = Flask(__name__)
    app.register_blueprint(pay_callbacks, url_prefix="/kraken/callbacks")
    client = app.test_client()

    def post(body: bytes) -> tuple[int, dict]:
        response = client.post("/kraken/callbacks", data=body, content_type="application/jwt")
        return response.status_code, response.get_json()

    return post


def aiohttp_post() -> Post:
    import asyncio

    from aiohttp import web

    from tasks.contrib.aiohttp import pay_callback_handler

    async def call(body: bytes) -> tuple[int, dict]:
        app = web.Application()
        app.router.add_post("/kraken/callbacks", pay_callback_handler)
        async with TestClient(TestServer(app)) as client:
            response = await client.post("/kraken/callbacks", data=body)
            return response.status, await response.json()

    return lambda body: asyncio.run(call(body))


FRAMEWORKS = {"django": django_post, "flask": flask_post, "aiohttp": aiohttp_post}


@pytest.fixture(params=sorted(FRAMEWORKS))
def post(request) -> Post:
    return FRAMEWORKS[request.param]()


def test_a_verified_notification_is_answered_200_and_queued_once(post, key, callbacks):
    token = key.sign(claims("GSoAAAAAAAA", "cancelled", None))
    assert post(token.encode()) == (200, SUCCESS)
    [message] = queued(callbacks)
    assert message["task"] == "kraken_pay.handle_callback"
    assert message["callback"]["external_id"] == "GSoAAAAAAAA"
    assert message["callback"]["status"] == "cancelled"
    assert token not in json.dumps(message)  # the token itself never travels on


@pytest.mark.parametrize(
    ("forge", "reason"),
    [
        (lambda key: key.sign(claims(iss="someone-else")), "wrong_issuer"),
        (lambda key: key.sign(claims(exp=1_000_000)), "expired"),
        (lambda key: Key("kraken-test-1").sign(claims()), "bad_signature"),
        (lambda key: Key("not-in-the-jwks").sign(claims()), "unknown_key"),
        (lambda key: "not a token", "not_a_jwt"),
    ],
)
def test_a_forged_notification_is_answered_400_and_queues_nothing(
    post, key, callbacks, forge, reason
):
    status, body = post(forge(key).encode())
    assert (status, body["reason"]) == (400, reason)
    assert queued(callbacks) == []


def test_a_body_past_the_bound_is_answered_413(post, callbacks):
    status, body = post(b"x" * (receiver.MAX_BODY_BYTES + 1))
    assert (status, body) == (413, {"error": "body: must be at most 9216 bytes"})
    assert queued(callbacks) == []


def test_a_notification_that_cannot_be_queued_is_answered_503(post, key, dead_broker):
    status, body = post(key.sign(claims()).encode())
    assert status == 503
    assert body == {"error": "queue: the notification could not be queued; send it again"}


def test_one_verifier_per_process_fetches_the_keys_once(key, callbacks, jwks):
    post = flask_post()
    hits = jwks.hits
    for status in ("cancelled", "expired", "success"):
        assert post(key.sign(claims(status=status)).encode())[0] == 200
    assert receiver.verifier() is receiver.verifier()
    assert jwks.hits - hits <= 1  # none if an earlier test already loaded the key
    assert len(queued(callbacks)) == 3


def test_the_django_view_refuses_get(callbacks):
    django_post()
    from django.test import RequestFactory

    from tasks.contrib.django import pay_callback_view

    assert pay_callback_view(RequestFactory().get("/kraken/callbacks")).status_code == 405


urlpatterns: list = []  # ROOT_URLCONF for the Django test settings
