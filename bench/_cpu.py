"""CPU seconds by role (publisher, worker nodes, pool processes, simulator, Redis), from /proc.

On a machine where every part shares the same cores, a throughput ratio is a ratio of CPU
per task: this says where each task's CPU went, so a ratio can be explained, not only read.
Linux only: elsewhere :func:`available` is False and the benchmark prints no breakdown.
"""

from __future__ import annotations

import os
import resource
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def available() -> bool:
    return Path("/proc/self/stat").exists()


def process_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` (all its threads); 0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK


def is_redis(pid: int) -> bool:
    """Whether ``pid`` is a Redis server of this machine (INFO's pid may be another host's)."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().startswith("redis")
    except OSError:
        return False


def own_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Roles:
    """Named groups of processes; :meth:`snapshot` reads each group's CPU seconds."""

    def __init__(self) -> None:
        self._roles: dict[str, Callable[[], float]] = {"publisher": own_seconds}

    def add(self, name: str, pids: Callable[[], Iterable[int]]) -> None:
        self._roles[name] = lambda: sum(process_seconds(pid) for pid in pids())

    def snapshot(self) -> dict[str, float]:
        return {name: read() for name, read in self._roles.items()}

    def spent_during(self, run: Callable[[], T], into: Counter[str]) -> T:
        """``run()``, adding the CPU seconds each role spent meanwhile to ``into``."""
        before = self.snapshot()
        out = run()
        for name, seconds in self.snapshot().items():
            into[name] += seconds - before[name]
        return out


def per_task_us(seconds: Mapping[str, float], tasks: int) -> dict[str, float]:
    """µs of CPU per task in each role, from the seconds spent over ``tasks``, and their
    ``total``."""
    spent = {name: value / tasks * 1e6 for name, value in seconds.items()}
    return spent | {"total": sum(spent.values())}
