"""Celery worker and beat processes on this machine, for the demo, the tests and benchmarks.

Each node is ``celery -A <app> worker|beat`` in a process group of its own (so a whole node,
pool included, can be stopped or SIGKILLed at once, and Ctrl-C reaches only the process
that started it), logging to a file that can be read afterwards.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["CELERY", "Beat", "CeleryNode", "Worker", "WorkerError", "wait_answering", "workers"]

CELERY = str(Path(sys.executable).with_name("celery"))
_TAIL = 3000  # characters of a node's log shown when it failed


class WorkerError(RuntimeError):
    """A node exited or did not get ready; ``summary`` is one line, the rest its log's tail."""

    def __init__(self, summary: str, log: str = "") -> None:
        super().__init__(f"{summary}\n{log[-_TAIL:]}" if log else summary)
        self.summary = summary


class CeleryNode:
    """``celery -A app ARGS...`` in its own process group, its output appended to ``log_path``.

    ``cwd`` is where the process starts (the standalone app reads ``celeryconfig.py`` from
    there); ``None`` keeps this process's working directory.
    """

    def __init__(
        self,
        env: Mapping[str, str],
        log_path: Path,
        args: Sequence[str],
        *,
        app: str = "tasks",
        cwd: str | Path | None = None,
    ) -> None:
        self.env = dict(env)
        self.log_path = log_path
        self.args = list(args)
        self.app = app
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        return [CELERY, "-A", self.app, *self.args]

    def start(self) -> CeleryNode:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.command(),
                env=self.env,
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a process group of its own: stop the whole node
            )
        return self

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def last_line(self) -> str:
        lines = [line for line in self.log().splitlines() if line.strip()]
        return lines[-1].strip() if lines else "(no output)"

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def pool_pids(self) -> list[int]:
        """The pids of this node's pool processes (children of its main process)."""
        if self.proc is None:
            return []
        path = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        try:
            return [int(pid) for pid in path.read_text().split()]
        except OSError:  # the main process is gone
            return []

    def kill_node(self) -> None:
        """SIGKILL the main process and its pool at once, as a lost host would."""
        if self.running():
            assert self.proc is not None
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    kill = kill_node  # beat has no pool, but the same SIGKILL of its group

    def stop(self, timeout: float = 15.0) -> None:
        """A warm shutdown; SIGKILL if it takes too long. Always reaps the whole group."""
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # pool children that outlived their parent
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)

    def __enter__(self) -> CeleryNode:
        return self if self.proc is not None else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Worker(CeleryNode):
    """One ``celery worker`` node, consuming ``queue`` (the library's queue, for isolation)
    or, without one, the app's default queue."""

    def __init__(
        self,
        env: Mapping[str, str],
        queue: str | None,
        log_dir: Path,
        *,
        pool: str = "prefork",
        concurrency: int = 2,
        name: str | None = None,
        host: str = "tests",
        loglevel: str = "INFO",
        app: str = "tasks",
        cwd: str | Path | None = None,
    ) -> None:
        self.queue = queue
        self.pool = pool
        self.concurrency = concurrency
        self.name = name or f"w-{uuid.uuid4().hex[:10]}"
        self.host = host
        super().__init__(env, log_dir / f"{self.name}.log", [], app=app, cwd=cwd)
        if queue is not None:  # the library's tasks go to KRAKEN_QUEUE: this node's queue
            self.env.setdefault("KRAKEN_QUEUE", queue)
        self.args = [
            *("worker", "--pool", pool, "--concurrency", str(concurrency)),
            *(("-Q", queue) if queue is not None else ()),
            *("-n", self.hostname, "--loglevel", loglevel),
            *("--without-gossip", "--without-mingle", "--without-heartbeat"),
        ]

    @property
    def hostname(self) -> str:
        return f"{self.name}@{self.host}"

    def wait_ready(self, app: Any, timeout: float = 30.0) -> Worker:
        """Return once this worker has run a no-op task from its queue."""
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive()
            result = app.send_task("kraken_pay.noop", queue=self.queue)
            try:
                result.get(timeout=min(2.0, max(0.1, deadline - time.monotonic())))
                return self
            except Exception:
                if time.monotonic() > deadline:
                    raise WorkerError(
                        f"worker {self.name} not ready in {timeout:g}s", self.log()
                    ) from None
            finally:
                result.forget()

    def check_alive(self) -> None:
        if not self.running():
            raise WorkerError(f"worker {self.name} exited: {self.last_line()}", self.log())


class Beat(CeleryNode):
    """``celery beat`` with its own schedule file."""

    def __init__(
        self,
        env: Mapping[str, str],
        schedule_file: Path,
        log_path: Path,
        *,
        loglevel: str = "INFO",
        app: str = "tasks",
        cwd: str | Path | None = None,
    ) -> None:
        args = ["beat", "-s", str(schedule_file), "-l", loglevel]
        super().__init__(env, log_path, args, app=app, cwd=cwd)
        self.schedule_file = schedule_file

    def wait_ticking(self, timeout: float = 30.0) -> Beat:
        """Return once beat has sent its first task (``dispatch_due``)."""
        deadline = time.monotonic() + timeout
        while "Sending due task" not in self.log():
            if time.monotonic() > deadline:
                raise WorkerError(f"beat did not tick within {timeout:g}s", self.log())
            time.sleep(0.05)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        super().stop(timeout)


@contextlib.contextmanager
def workers(*nodes: CeleryNode) -> Iterator[tuple[CeleryNode, ...]]:
    """Start every node; stop them all on the way out, whatever happened."""
    try:
        for node in nodes:
            node.start()
        yield nodes
    finally:
        for node in nodes:
            node.stop()


def wait_answering(app: Any, nodes: Iterable[Worker], timeout: float = 60.0) -> None:
    """Return once every node answers a ping over ``app``'s broker; fail at once if one
    exited, naming it and its last log line."""
    nodes = list(nodes)
    deadline = time.monotonic() + timeout
    waiting = {node.hostname for node in nodes}
    while waiting:
        for node in nodes:
            node.check_alive()
        replies = app.control.ping(destination=sorted(waiting), timeout=0.5)
        waiting -= {name for reply in replies for name in reply}
        if waiting and time.monotonic() > deadline:
            raise WorkerError(f"workers not ready after {timeout:g}s: {', '.join(sorted(waiting))}")
