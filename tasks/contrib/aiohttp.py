"""Kraken Pay's notifications in aiohttp: a handler, mounted in one line::

    app.router.add_post("/kraken/callbacks", pay_callback_handler)

It verifies on the loop (the JWKS fetched with aiohttp), queues ``kraken_pay.handle_callback``
in a thread (publishing blocks) and answers as Kraken's guide says. The Celery app is the one
current in the loop's thread; ``make_handler(app)`` names another.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from kraken.pay.webhooks import MAX_BODY_BYTES, PayCallback, aiohttp_handler
from tasks.contrib.receiver import NotQueued, not_queued, publish, running_app, verifier

__all__ = ["make_handler", "pay_callback_handler"]

Handler = Callable[[web.Request], Awaitable[web.Response]]


def make_handler(app: Any = None) -> Handler:
    """A handler that verifies against ``app``'s ``jwks_url`` and queues on ``app``."""

    async def handle(request: web.Request) -> web.Response:
        celery_app = app or running_app()

        async def hand_off(callback: PayCallback) -> None:
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, publish, callback, celery_app)

        inner = aiohttp_handler(verifier(celery_app), hand_off, max_body=MAX_BODY_BYTES)
        try:
            return await inner(request)
        except NotQueued:
            reply = not_queued()
            return web.Response(
                body=reply.json(), status=reply.status, content_type=reply.content_type
            )

    return handle


pay_callback_handler = make_handler()
