"""Reading a request body within bounds: its size, the time it takes, and its JSON nesting.

A body over its route's limit is refused from its ``Content-Length``, or as soon as the bytes
streamed in pass the limit, so no more than the limit is ever held. JSON is only parsed once
a scan (at C speed) has shown its nesting is shallow, so a deep body cannot reach the
decoder's recursion limit.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

from aiohttp import web

__all__ = ["BodyTooLarge", "SlowBody", "loads_object", "nesting_within", "read_body"]


class BodyTooLarge(Exception):
    """The body is larger than its route allows; nothing past the limit was read."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"body: larger than {limit:,} bytes")
        self.limit = limit


class SlowBody(Exception):
    """The body did not arrive within the time allowed."""


async def read_body(request: web.BaseRequest, limit: int, timeout: float) -> bytes:
    """The whole body, if it is at most ``limit`` bytes and arrives within ``timeout`` seconds."""
    length = request.content_length
    if length is not None and length > limit:
        raise BodyTooLarge(limit)
    content = request.content
    if content.is_eof():  # already here, as a small body is with its headers: no timer needed
        return await _read(content, limit)
    try:
        return await asyncio.wait_for(_read(content, limit), timeout)
    except asyncio.TimeoutError:
        raise SlowBody(f"body: not received within {timeout:g} seconds") from None


async def _read(content: Any, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await content.readany()
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(limit)
        chunks.append(chunk)


_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_INNERMOST = re.compile(rb"\[\]|\{\}")
_NOT_BRACKETS = bytes(set(range(256)) - set(b"[]{}"))


def nesting_within(body: bytes, depth: int) -> bool:
    """Whether no array or object of ``body`` (JSON, perhaps invalid) is nested over ``depth``.

    Strings are removed, then every other byte but brackets; each round of removing empty
    pairs takes one level off, so ``depth`` rounds must leave nothing. Unbalanced brackets
    (invalid JSON) answer ``False``.
    """
    if body.count(b"[") + body.count(b"{") <= depth:  # a cancel body: one object, done
        return True
    brackets = _STRING.sub(b"", body).translate(None, _NOT_BRACKETS)
    for _ in range(depth):
        if not brackets:
            return True
        brackets = _INNERMOST.sub(b"", brackets)
    return not brackets


def loads_object(body: bytes, depth: int) -> dict[str, Any] | None:
    """The JSON object ``body`` holds, or ``None`` if it holds anything else or nests too deep."""
    if not nesting_within(body, depth):
        return None
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    return payload if isinstance(payload, dict) else None
