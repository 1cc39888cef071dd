"""A Redis for the demo and the tests: the configured one if it answers, else one we start.

Order of preference: the server at the given URL; a ``redis-server`` process in a temporary
directory when the binary is installed; last, fakeredis's TCP server in a thread, so a bare
machine still runs everything against a real socket.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import redis

__all__ = ["redis_answers", "redis_db", "redis_server"]


def redis_db(url: str, db: int) -> str:
    """The same Redis server as ``url``, another database number."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{db}", parts.query, parts.fragment))


def redis_answers(url: str, timeout: float = 0.5) -> bool:
    client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_until_up(url: str, deadline: float) -> None:
    while not redis_answers(url, timeout=0.2):
        if time.monotonic() > deadline:
            raise RuntimeError(f"embedded Redis at {url} did not answer in time")
        time.sleep(0.05)


@contextlib.contextmanager
def _redis_process(binary: str) -> Iterator[str]:
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="kraken-redis-") as workdir:
        proc = subprocess.Popen(
            [
                binary,
                "--bind",
                "127.0.0.1",
                "--port",
                str(port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                workdir,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        url = f"redis://127.0.0.1:{port}/0"
        try:
            _wait_until_up(url, time.monotonic() + 10)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _keep_alive_on_errors(handler: type) -> type:
    """fakeredis's TCP handler closes the connection after any error reply (fakeredis 2.40),
    so redis-py's EVALSHA-then-EVAL for a Lua script never gets to EVAL. This one sends the
    error and keeps serving, as Redis does."""

    class KeepAlive(handler):  # type: ignore[misc, valid-type]
        def setup(self) -> None:
            super().setup()
            read_response = self.current_client.read_response

            def read_or_error(*args: object, **kwargs: object) -> object:
                try:
                    return read_response(*args, **kwargs)
                except redis.ResponseError as exc:  # an answer, not a broken connection
                    return exc

            self.current_client.read_response = read_or_error

    return KeepAlive


@contextlib.contextmanager
def _fakeredis_server() -> Iterator[str]:
    from fakeredis import TcpFakeServer  # only needed on machines without redis-server

    port = _free_port()
    server = TcpFakeServer(("127.0.0.1", port), server_type="redis")
    server.RequestHandlerClass = _keep_alive_on_errors(server.RequestHandlerClass)
    thread = threading.Thread(target=server.serve_forever, name="fakeredis", daemon=True)
    thread.start()
    url = f"redis://127.0.0.1:{port}/0"
    try:
        _wait_until_up(url, time.monotonic() + 10)
        yield url
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def redis_server(url: str | None = None, *, prefer: str = "auto") -> Iterator[str]:
    """Yield the URL of a Redis that answers, starting one only when ``url`` does not.

    ``prefer`` may force ``"process"`` or ``"fakeredis"`` (used by the tests of this module).
    """
    if prefer == "auto" and url and redis_answers(url):
        yield url
        return
    binary = shutil.which("redis-server")
    if binary and prefer in ("auto", "process"):
        with _redis_process(binary) as started:
            yield started
        return
    with _fakeredis_server() as started:
        yield started
