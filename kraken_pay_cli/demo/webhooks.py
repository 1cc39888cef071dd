"""The demo's receiver of Kraken Pay's notifications, and the hook that counts confirmations.

The receiver is :mod:`tasks.contrib.aiohttp`'s handler on an event loop of its own, in a
thread of the demo's process, on an ephemeral loopback port; the simulator POSTs its signed
notifications there, the handler verifies them against the simulator's JWKS and queues
``kraken_pay.handle_callback`` on the demo's broker; the workers run the task, whose hook
(``KRAKEN_CALLBACK_HOOK``, :func:`record_confirmation`) remembers each request Kraken
confirmed as cancelled. Repeats are folded by the task, so the count is of requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

import redis
from aiohttp import web

from kraken.pay.webhooks import PayCallback

__all__ = [
    "CONFIRMED_KEY",
    "HOOK",
    "confirmed",
    "receiver",
    "record_confirmation",
    "wait_confirmed",
]

CONFIRMED_KEY = "kraken-pay-demo:confirmed"  # in the demo's own database, emptied on exit
HOOK = "kraken_pay_cli.demo.webhooks:record_confirmation"
PATH = "/kraken/callbacks"


def record_confirmation(callback: PayCallback) -> None:
    """The workers' hook: a ``cancelled`` notification confirms that request's cancellation."""
    if callback.status != "cancelled":
        return
    from tasks.settings import settings_for

    with redis.Redis.from_url(settings_for().redis_url) as client:
        client.sadd(CONFIRMED_KEY, callback.external_id)


def confirmed(redis_url: str) -> int:
    with redis.Redis.from_url(redis_url) as client:
        return int(client.scard(CONFIRMED_KEY))


def wait_confirmed(redis_url: str, expected: int, timeout: float) -> int:
    """The count once it reaches ``expected``, or whatever it is after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    count = confirmed(redis_url)
    while count < expected and time.monotonic() < deadline:
        time.sleep(0.1)
        count = confirmed(redis_url)
    return count


async def _serve(app: Any, started: threading.Event, box: dict[str, Any]) -> None:
    from tasks.contrib.aiohttp import make_handler

    web_app = web.Application()
    web_app.router.add_post(PATH, make_handler(app))
    runner = web.AppRunner(web_app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    box["url"] = f"http://127.0.0.1:{runner.addresses[0][1]}{PATH}"
    box["loop"], box["stop"] = asyncio.get_running_loop(), asyncio.Event()
    started.set()
    try:
        await box["stop"].wait()
    finally:
        await runner.cleanup()


@contextlib.contextmanager
def receiver(app: Any) -> Iterator[str]:
    """The receiver, serving until the block ends; its URL, for ``sim.register_webhook``."""
    started, box = threading.Event(), {}
    thread = threading.Thread(
        target=lambda: asyncio.run(_serve(app, started, box)), name="demo-receiver", daemon=True
    )
    thread.start()
    if not started.wait(10):
        raise RuntimeError("the demo's receiver did not start")
    try:
        yield box["url"]
    finally:
        with contextlib.suppress(RuntimeError):  # its loop already ended
            box["loop"].call_soon_threadsafe(box["stop"].set)
        thread.join(5)
