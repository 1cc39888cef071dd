"""One event loop in one background thread, and one KrakenPayClient on it, per process.

Celery tasks are synchronous and the client is not: a task hands its coroutine to this
process's loop with :func:`run` and waits for the answer. The loop, its thread, the aiohttp
session (one connection pool) and the Redis client of the nonce source are created after
fork, on first use or at ``worker_process_init``, and closed at process shutdown. A forked
child never touches its parent's loop: the runtime remembers the pid that built it. The same
code serves the prefork, threads and solo pools, and eager mode (in the caller's process).
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import os
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import redis.asyncio

from kraken.pay import KrakenPayClient, RateBudget, RedisNonce
from tasks import logs
from tasks.metrics import ObservedClient
from tasks.settings import Settings

__all__ = [
    "Runtime",
    "build_client",
    "client",
    "client_options",
    "close_client",
    "current",
    "run",
    "set_client_factory",
    "shutdown",
    "start",
]

log = logs.logger("tasks.runtime")

T = TypeVar("T")
ClientFactory = Callable[[], Awaitable[Any]]

_CLOSE_TIMEOUT = 5.0


def client_options(settings: Settings) -> dict[str, Any]:
    """The client's options from ``settings``, beside its credentials, nonces and budget."""
    return {
        "base_url": settings.api_url,
        "ordering": settings.ordering,
        "timeout": settings.timeout,
        "max_response_bytes": settings.max_response_bytes,
        "max_retry_after": settings.max_retry_after,
        "late_landing_grace": settings.late_landing_grace,
    }


async def build_client(settings: Settings) -> KrakenPayClient:
    """The production client: Redis nonces and a rate budget shared by every worker of the
    key (``kraken-pay cancel --direct`` and ``check`` build theirs here too)."""
    credentials = settings.credentials()
    shared = redis.asyncio.Redis.from_url(settings.redis_url)
    nonce = RedisNonce(shared, credentials.key_id, prefix=settings.redis_prefix)
    budget = None
    if settings.rate_per_second:
        budget = RateBudget(
            shared,
            credentials.key_id,
            capacity=settings.rate_capacity,
            per_second=settings.rate_per_second,
            max_wait=settings.rate_max_wait,
            max_pause=settings.max_retry_after,
            prefix=settings.redis_prefix,
        )
    # A KrakenPayClient whose calls and waits are counted.
    return ObservedClient(credentials, nonce=nonce, rate_budget=budget, **client_options(settings))


async def close_client(client: Any) -> None:
    """Close ``client`` and the Redis connection of its nonces, if it has one."""
    close = getattr(client, "close", None)
    if close is not None:
        await close()
    nonce_redis = getattr(getattr(client, "nonce", None), "redis", None)
    if isinstance(nonce_redis, redis.asyncio.Redis):
        await nonce_redis.aclose()


class Runtime:
    """An event loop thread and the one client that lives on it."""

    def __init__(self, factory: ClientFactory) -> None:
        self.pid = os.getpid()
        self._factory = factory
        self._client: Any = None
        self._closed = False
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._serve, name=f"kraken-runtime-{self.pid}", daemon=True
        )
        self._thread.start()
        # Build the client on its own loop, so every object it owns is bound to that loop.
        try:
            self._client = self._submit(self._factory()).result()
        except BaseException:
            self._closed = True
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(_CLOSE_TIMEOUT)
            raise

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()
        self.loop.close()

    def _submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    @property
    def client(self) -> Any:
        return self._client

    @property
    def alive(self) -> bool:
        return not self._closed and self._thread.is_alive() and self.pid == os.getpid()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None) -> T:
        """Run ``coro`` on the loop and return its result; raise ``TimeoutError`` after
        ``timeout`` seconds, having cancelled it. Any interruption (a soft time limit, a
        ``KeyboardInterrupt``) cancels it too, so nothing keeps running unseen."""
        if not self.alive:
            coro.close()
            raise RuntimeError("the runtime is closed")
        future = self._submit(logs.carry(coro))  # the task's log fields, on the loop too
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError(f"no result within {timeout:g}s; the call was cancelled") from None
        except BaseException:
            future.cancel()
            raise

    def close(self, timeout: float = _CLOSE_TIMEOUT) -> None:
        """Close the client, then stop the loop and its thread. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        if self.pid != os.getpid():  # a forked copy: the loop thread does not exist here
            return
        try:
            self._submit(close_client(self._client)).result(timeout)
        except Exception as exc:  # closing must not hide the reason the process stops
            log.warning("closing the Kraken client failed: %s", type(exc).__name__)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout)


_lock = threading.Lock()
_runtime: Runtime | None = None
_factory: ClientFactory | None = None


def _forget_after_fork() -> None:
    # The child inherits the parent's objects but not its threads: start afresh.
    global _lock, _runtime
    _lock = threading.Lock()
    _runtime = None


os.register_at_fork(after_in_child=_forget_after_fork)


def set_client_factory(factory: ClientFactory | None) -> None:
    """Use ``factory`` (an async callable returning a client) from now on; ``None`` restores
    the production client. The current runtime, if any, is closed."""
    global _factory
    shutdown()
    _factory = factory


def start(settings: Settings | None = None) -> Runtime:
    """The runtime of this process, started if needed (idempotent, thread-safe, fork-safe).

    The first start builds the client from ``settings`` (those of the app whose task runs
    first), unless a factory was set with :func:`set_client_factory`.
    """
    global _runtime
    runtime = _runtime
    if runtime is not None and runtime.alive:
        return runtime
    with _lock:
        if _runtime is None or not _runtime.alive:
            _runtime = Runtime(_factory or _production_factory(settings))
        return _runtime


def _production_factory(settings: Settings | None) -> ClientFactory:
    if settings is None:
        raise RuntimeError("the runtime needs the app's settings to build its client")
    return lambda: build_client(settings)


def current() -> Runtime | None:
    """The runtime of this process if one is running, else ``None`` (never starts one)."""
    runtime = _runtime
    return runtime if runtime is not None and runtime.alive else None


def client(settings: Settings | None = None) -> Any:
    """This process's client, built from ``settings`` on first use."""
    return start(settings).client


def run(coro: Coroutine[Any, Any, T], timeout: float | None) -> T:
    """Run ``coro`` on this process's loop; wait at most ``timeout`` seconds."""
    return start().run(coro, timeout)


def shutdown() -> None:
    """Close this process's runtime, if it has one."""
    global _runtime
    with _lock:
        runtime, _runtime = _runtime, None
    if runtime is not None:
        runtime.close()


atexit.register(shutdown)
