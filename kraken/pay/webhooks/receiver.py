"""The endpoint Kraken Pay POSTs to, framework-neutral, and its aiohttp handler.

:func:`receive` (and :func:`areceive`) turn a request body into a :class:`Reply`: a body too
large is refused before it is read further, a token that does not verify answers 4xx and reaches
no hook, and a verified one is handed to ``on_callback`` before the guide's 200 answer. A Django
view or a Flask blueprint is then three lines: read the body, call :func:`receive`, send the
reply. The hook is called on every delivery, Kraken's repeats included: de-duplicate on
``callback.notification_id``. If the hook raises, the error propagates, the framework answers
500 and Kraken sends the notification again.
"""

from __future__ import annotations

import inspect
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from kraken.pay.webhooks.callback import InvalidCallback, PayCallback
from kraken.pay.webhooks.verifier import MAX_TOKEN_CHARS, PayCallbackVerifier

__all__ = ["MAX_BODY_BYTES", "SUCCESS", "Reply", "aiohttp_handler", "areceive", "receive"]

log = logging.getLogger("kraken.pay.webhooks")

MAX_BODY_BYTES = MAX_TOKEN_CHARS + 1024  # a token, and room for a JSON string around it
# The answer Kraken's guide asks for once a notification is validated: its Rust example
# serialises `CallbackResponse { code: PayResponseCode::Success }`.
SUCCESS: dict[str, Any] = {"code": "Success"}

Hook = Callable[[PayCallback], Any]
AsyncHook = Callable[[PayCallback], Awaitable[Any] | Any]


@dataclass(frozen=True)
class Reply:
    """What to answer Kraken: an HTTP status and a JSON object."""

    status: int
    body: dict[str, Any] = field(default_factory=lambda: dict(SUCCESS))
    callback: PayCallback | None = field(default=None, repr=False, compare=False)

    content_type = "application/json"

    def json(self) -> bytes:
        return json.dumps(self.body, separators=(",", ":")).encode()


def _too_large(size: int | None, limit: int) -> Reply | None:
    if size is not None and size > limit:
        return Reply(413, {"error": f"body: must be at most {limit} bytes"})
    return None


def _token(body: bytes, content_type: str | None) -> bytes | str:
    """The JWT in a body: the raw token (the guide's form) or, under JSON, a JSON string."""
    if content_type and content_type.split(";")[0].strip().lower() == "application/json":
        try:
            value = json.loads(body)
        except ValueError:
            return body
        if isinstance(value, str):
            return value
    return body


def _refused(exc: InvalidCallback) -> Reply:
    status = 503 if exc.transient else 400
    log.warning("kraken pay callback refused: %s", exc)
    return Reply(status, {"error": str(exc), "reason": exc.reason})


def _accepted(callback: PayCallback) -> Reply:
    log.info(
        "kraken pay callback: %s is %s",
        callback.external_id,
        callback.status,
        extra={"external_id": callback.external_id, "status": callback.status},
    )
    return Reply(200, dict(SUCCESS), callback)


def receive(
    body: bytes,
    content_type: str | None,
    verifier: PayCallbackVerifier,
    on_callback: Hook,
    *,
    max_body: int = MAX_BODY_BYTES,
) -> Reply:
    """Verify one notification and hand it to ``on_callback``; what to answer Kraken."""
    reply = _too_large(len(body), max_body)
    if reply is not None:
        return reply
    try:
        callback = verifier.verify(_token(body, content_type))
    except InvalidCallback as exc:
        return _refused(exc)
    result = on_callback(callback)
    if inspect.isawaitable(result):
        close = getattr(result, "close", None)
        if close is not None:
            close()  # never awaited: close it rather than leave a warning behind
        raise TypeError("on_callback: returned an awaitable; use areceive() for coroutine hooks")
    return _accepted(callback)


async def areceive(
    body: bytes,
    content_type: str | None,
    verifier: PayCallbackVerifier,
    on_callback: AsyncHook,
    *,
    max_body: int = MAX_BODY_BYTES,
) -> Reply:
    """:func:`receive` for event loops; ``on_callback`` may be a function or a coroutine one."""
    reply = _too_large(len(body), max_body)
    if reply is not None:
        return reply
    try:
        callback = await verifier.averify(_token(body, content_type))
    except InvalidCallback as exc:
        return _refused(exc)
    result = on_callback(callback)
    if inspect.isawaitable(result):
        await result
    return _accepted(callback)


async def _read_bounded(request: web.Request, limit: int) -> bytes | None:
    """The body, or ``None`` once it passes ``limit`` bytes (the rest is never read)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(16 * 1024):
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def aiohttp_handler(
    verifier: PayCallbackVerifier,
    on_callback: AsyncHook,
    *,
    max_body: int = MAX_BODY_BYTES,
) -> Callable[[web.Request], Awaitable[web.Response]]:
    """A handler for ``app.router.add_post("/kraken/pay/callback", handler)``."""

    async def answer(request: web.Request) -> Reply:
        body = await _read_bounded(request, max_body)
        if body is None:
            return Reply(413, {"error": f"body: must be at most {max_body} bytes"})
        return await areceive(body, request.content_type, verifier, on_callback, max_body=max_body)

    async def handle(request: web.Request) -> web.Response:
        reply = _too_large(request.content_length, max_body) or await answer(request)
        return web.Response(body=reply.json(), status=reply.status, content_type=Reply.content_type)

    return handle
