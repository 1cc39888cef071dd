"""The simulator's TCP site: it counts accepted connections and closes those too slow to ask.

aiohttp's server has a keep-alive timeout for idle connections, but no bound on the time a new
connection may take to send its request headers (before aiohttp 3.14 none at all), so 3,000
connections dripping header bytes were all held. The guard here gives each new connection
``header_timeout`` seconds to deliver a complete request head; after its first request the
keep-alive timeout applies, which also closes a connection stuck in the next request's head.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

__all__ = ["CountingSite", "url_of"]

_BACKLOG = 1024  # benchmarks open hundreds of connections at once


class CountingSite(web.BaseSite):
    """A TCP site that counts connections and closes one whose first request head is late."""

    __slots__ = ("_header_timeout", "_host", "_on_connection", "_on_slow", "_pending", "_port")

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        on_connection: Callable[[], None],
        *,
        header_timeout: float,
        on_slow: Callable[[], None],
    ) -> None:
        super().__init__(runner, backlog=_BACKLOG)
        self._host = host
        self._port = port
        self._on_connection = on_connection
        self._header_timeout = header_timeout
        self._on_slow = on_slow
        # Connections whose first request head has not arrived yet, with their deadline timer.
        self._pending: dict[RequestHandler, asyncio.TimerHandle] = {}

    @property
    def name(self) -> str:
        return url_of(self._host, self.port)

    @property
    def port(self) -> int:
        if self._server is None or not self._server.sockets:
            return self._port
        return self._server.sockets[0].getsockname()[1]

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        self._watch_request_heads(server)
        loop = asyncio.get_running_loop()

        def protocol() -> asyncio.Protocol:
            self._on_connection()
            handler = server()
            self._pending[handler] = loop.call_later(self._header_timeout, self._late, handler)
            return handler

        self._server = await loop.create_server(
            protocol, self._host, self._port, backlog=self._backlog
        )

    async def stop(self) -> None:
        for timer in self._pending.values():
            timer.cancel()
        self._pending.clear()
        await super().stop()

    def _watch_request_heads(self, server: web.Server) -> None:
        """Disarm a connection's timer once aiohttp has parsed its first request head.

        aiohttp builds each request through the server's ``request_factory``, passing the
        connection's handler, as soon as the head is parsed; handlers copy the factory when
        they are made, so it is wrapped before the first connection.
        """
        make_request = server.request_factory
        pending = self._pending

        def request_factory(message: Any, payload: Any, protocol: Any, *rest: Any) -> Any:
            timer = pending.pop(protocol, None)
            if timer is not None:
                timer.cancel()
            return make_request(message, payload, protocol, *rest)

        server.request_factory = request_factory

    def _late(self, handler: RequestHandler) -> None:
        if self._pending.pop(handler, None) is None:
            return
        if handler.transport is not None:  # still open: it never finished a request head
            self._on_slow()
            handler.force_close()


def url_of(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
