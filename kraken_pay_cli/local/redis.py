"""A Redis for the demo, the tests and the benchmarks: the configured one if it answers, else
one we start.

Order of preference: the server at the given URL; a ``redis-server`` process in a temporary
directory when the binary is installed; last, fakeredis's TCP server in a thread, so a bare
machine still runs everything against a real socket. :class:`RedisProcess` is that
``redis-server`` on its own, for a run that kills and restarts it (the soak).
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import redis

from kraken_pay_cli.local.ports import free_port
from kraken_pay_cli.probes import redis_answers

__all__ = ["RedisProcess", "redis_answers", "redis_db", "redis_server"]

_START_TIMEOUT = 10.0  # seconds a Redis we start gets to answer


def redis_db(url: str, db: int) -> str:
    """The same Redis server as ``url``, another database number."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{db}", parts.query, parts.fragment))


def _wait_until_up(url: str, deadline: float) -> None:
    while not redis_answers(url, timeout=0.2):
        if time.monotonic() > deadline:
            raise RuntimeError(f"embedded Redis at {url} did not answer in time")
        time.sleep(0.05)


class RedisProcess:
    """``redis-server`` on a free loopback port, its files in ``directory``; :meth:`kill` and
    :meth:`start` again keep the data when ``aof`` is on (appendfsync everysec)."""

    def __init__(self, directory: Path, *, aof: bool = False, binary: str | None = None) -> None:
        self.directory = directory
        self.aof = aof
        self.binary = binary or shutil.which("redis-server") or "redis-server"
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = _START_TIMEOUT) -> RedisProcess:
        command = [self.binary, "--bind", "127.0.0.1", "--port", str(self.port)]
        command += ["--dir", str(self.directory), "--save", ""]
        aof = ["--appendonly", "yes", "--appendfsync", "everysec"]
        command += aof if self.aof else ["--appendonly", "no"]
        self.proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            _wait_until_up(self.url, time.monotonic() + timeout)
        except RuntimeError:
            self.stop()
            raise
        return self

    def kill(self) -> None:
        """SIGKILL, as a crash: nothing is flushed but what AOF already wrote."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=_START_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.kill()


@contextlib.contextmanager
def _redis_process(binary: str) -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="kraken-redis-") as workdir:
        server = RedisProcess(Path(workdir), binary=binary).start()
        try:
            yield server.url
        finally:
            server.stop()


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

    port = free_port()
    server = TcpFakeServer(("127.0.0.1", port), server_type="redis")
    server.RequestHandlerClass = _keep_alive_on_errors(server.RequestHandlerClass)
    thread = threading.Thread(target=server.serve_forever, name="fakeredis", daemon=True)
    thread.start()
    url = f"redis://127.0.0.1:{port}/0"
    try:
        _wait_until_up(url, time.monotonic() + _START_TIMEOUT)
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
