"""A TCP site that counts accepted connections, which no per-request hook can see."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from aiohttp import web

__all__ = ["CountingSite", "url_of"]

_BACKLOG = 1024  # benchmarks open hundreds of connections at once


class CountingSite(web.BaseSite):
    """A TCP site that counts accepted connections, which no per-request hook can see."""

    __slots__ = ("_host", "_on_connection", "_port")

    def __init__(
        self, runner: web.BaseRunner, host: str, port: int, on_connection: Callable[[], None]
    ) -> None:
        super().__init__(runner, backlog=_BACKLOG)
        self._host = host
        self._port = port
        self._on_connection = on_connection

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
        make_protocol = self._runner.server
        assert make_protocol is not None
        on_connection = self._on_connection

        def protocol() -> asyncio.Protocol:
            on_connection()
            return make_protocol()

        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            protocol, self._host, self._port, backlog=self._backlog
        )


def url_of(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
