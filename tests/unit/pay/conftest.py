"""The client's unit tests' fixture: a local server standing in for Kraken, whose answer each
test picks (where the simulator cannot give it: huge bodies, a gzip bomb, hostile headers)."""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

OK = b'{"error":[],"result":{}}'
PIECE = b" " * 65536  # JSON allows whitespace: a huge answer can still be a valid envelope


class Kraken:
    """Answers every POST as ``answer`` says, and counts the calls that reach it.

    ``ok``: success; ``announced``: a Content-Length of 100 MB before any of it comes;
    ``gzip``: 200 MiB once decompressed; ``stream``: 800 MiB, chunked; ``rate_limited``:
    HTTP 429 with ``retry_after`` as its Retry-After header.
    """

    def __init__(self) -> None:
        self.calls = 0
        self.answer = "ok"
        self.retry_after = "1"
        self.url = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        await request.read()
        self.calls += 1
        if self.answer == "ok":
            return web.Response(body=OK, content_type="application/json")
        if self.answer == "rate_limited":
            body = b'{"error":["EAPI:Rate limit exceeded"]}'
            return web.Response(status=429, body=body, headers={"Retry-After": self.retry_after})
        if self.answer == "announced":
            return web.Response(body=PIECE * 1600, content_type="application/json")
        if self.answer == "gzip":
            headers = {"Content-Encoding": "gzip", "Content-Type": "application/json"}
            return web.Response(body=_gzip_bomb(), headers=headers)
        return await self._stream(request, pieces=12_800)

    async def _stream(self, request: web.Request, pieces: int) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        try:
            await response.write(b'{"error":[],"result":{}')
            for _ in range(pieces):
                await response.write(PIECE)
            await response.write(b"}")
        except (ConnectionError, RuntimeError):  # the client hung up, as it should
            pass
        return response


def _gzip_bomb(mib: int = 200) -> bytes:
    """A valid gzip envelope of ``mib`` MiB that travels as a few hundred KB."""
    gzip = zlib.compressobj(9, zlib.DEFLATED, 31)
    parts = [gzip.compress(b'{"error":[],"result":{}')]
    parts += [gzip.compress(PIECE * 16) for _ in range(mib)]
    return b"".join([*parts, gzip.compress(b"}"), gzip.flush()])


@pytest.fixture
async def kraken() -> AsyncIterator[Kraken]:
    """The stand-in on an ephemeral loopback port; ``kraken.url`` is its base URL."""
    server = Kraken()
    app = web.Application()
    app.router.add_post("/{tail:.*}", server.handle)
    async with TestServer(app, host="127.0.0.1", port=0) as test_server:
        server.url = str(test_server.make_url("")).rstrip("/")
        yield server
