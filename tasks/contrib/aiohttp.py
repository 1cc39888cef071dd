"""Kraken Pay's notifications in aiohttp: a handler, mounted in one line::

    app.router.add_post("/kraken/callbacks", pay_callback_handler)

It verifies on the loop (the JWKS fetched with aiohttp), queues ``kraken_pay.handle_callback``
on the running Celery app in a thread (publishing blocks) and answers as Kraken's guide says.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from kraken.pay.webhooks import MAX_BODY_BYTES, PayCallback, aiohttp_handler
from tasks.contrib.receiver import NotQueued, not_queued, publish, verifier

__all__ = ["pay_callback_handler"]


async def _publish(callback: PayCallback) -> None:
    await asyncio.get_running_loop().run_in_executor(None, publish, callback)


async def pay_callback_handler(request: web.Request) -> web.Response:
    """Verify a notification, queue ``handle_callback``, answer as Kraken's guide says."""
    handle = aiohttp_handler(verifier(), _publish, max_body=MAX_BODY_BYTES)
    try:
        return await handle(request)
    except NotQueued:
        reply = not_queued()
        return web.Response(body=reply.json(), status=reply.status, content_type=reply.content_type)
