"""tasks/runtime.py: one event loop thread and one client per process, fork-safe."""

from __future__ import annotations

import asyncio
import multiprocessing
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from fake_client import ScriptedClient

from tasks import runtime


@pytest.fixture
def built(client_factory) -> list[ScriptedClient]:
    """The clients the runtime builds, each a fresh ScriptedClient, in order."""
    clients: list[ScriptedClient] = []

    async def factory() -> ScriptedClient:
        clients.append(ScriptedClient())
        return clients[-1]

    client_factory(factory)
    return clients


async def _where() -> tuple[int, asyncio.AbstractEventLoop]:
    return threading.get_ident(), asyncio.get_running_loop()


def test_run_executes_the_coroutine_on_the_background_loop(built):
    thread_id, loop = runtime.run(_where(), timeout=5)
    assert thread_id != threading.get_ident()
    assert loop is runtime.current().loop


def test_many_threads_share_one_loop_and_one_client(built):
    def task(_: int):
        return runtime.run(_where(), timeout=5)[1], runtime.client()

    with ThreadPoolExecutor(8) as pool:
        seen = list(pool.map(task, range(200)))

    assert len({id(loop) for loop, _ in seen}) == 1
    assert len({id(client) for _, client in seen}) == 1
    assert len(built) == 1


def test_a_timeout_cancels_the_coroutine_and_raises_timeout_error(built):
    cancelled = threading.Event()

    async def slow() -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    started = time.monotonic()
    with pytest.raises(TimeoutError):
        runtime.run(slow(), timeout=0.2)
    assert time.monotonic() - started < 2
    assert cancelled.wait(2)


def test_exceptions_reach_the_caller(built):
    async def boom() -> None:
        raise LookupError("from the loop")

    with pytest.raises(LookupError, match="from the loop"):
        runtime.run(boom(), timeout=5)


def test_shutdown_closes_the_client_and_stops_the_thread(built):
    first = runtime.start()
    runtime.shutdown()
    assert built[0].closed
    assert not first._thread.is_alive()
    assert runtime.current() is None
    assert runtime.start() is not first  # started again on demand
    assert len(built) == 2


def test_a_factory_that_fails_leaves_no_thread_behind(client_factory):
    async def failing():
        raise RuntimeError("no client today")

    before = threading.active_count()
    client_factory(failing)
    with pytest.raises(RuntimeError, match="no client today"):
        runtime.start()
    assert runtime.current() is None
    assert threading.active_count() == before


def _child(conn) -> None:
    parent_loop_id = conn.recv()
    fresh = runtime.current() is None
    _, loop = runtime.run(_where(), timeout=5)
    conn.send((fresh, id(loop) != parent_loop_id, runtime.current().pid))
    runtime.shutdown()


def test_a_forked_child_never_reuses_its_parents_loop(built):
    parent = runtime.start()
    context = multiprocessing.get_context("fork")
    ours, theirs = context.Pipe()
    child = context.Process(target=_child, args=(theirs,))
    child.start()
    ours.send(id(parent.loop))
    fresh, other_loop, child_pid = ours.recv()
    child.join(10)

    assert fresh and other_loop
    assert child_pid == child.pid
    assert runtime.current() is parent  # the parent's runtime is untouched
