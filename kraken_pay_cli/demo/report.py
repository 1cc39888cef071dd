"""What the demo counts and prints: the tally of outcomes, the final table, its problems."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from kraken_pay_cli.demo.faults import FAULT_ERRORS
from kraken_pay_cli.demo.metrics import MetricsFigures
from kraken_pay_cli.local import Worker

__all__ = ["Printer", "Report", "Tally"]


@dataclass
class Tally:
    """What the task results and the bulk summary say."""

    sent: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    task_results: int = 0  # cancel_request results received
    by_task: int = 0  # of which cancelled
    confirmed_on_retry: int = 0
    failures: Counter[str] = field(default_factory=Counter)  # error class -> ids
    bulk_done: int = 0  # ids of finished bulk chunks
    handed_off: int = 0  # ids a bulk chunk gave to cancel_request to retry durably
    unfinished: int = 0
    seconds: float = 0.0

    @property
    def done(self) -> int:
        return self.task_results + self.bulk_done

    def add(self, value: Any) -> None:
        """One ``cancel_request`` result (a dict) or failure (an exception)."""
        self.task_results += 1
        if isinstance(value, BaseException):
            self.failures[type(value).__name__] += 1
            return
        self.outcomes[value["outcome"]] += 1
        self.by_task += value["outcome"] == "cancelled"
        self.confirmed_on_retry += bool(value.get("confirmed_on_retry"))

    def add_bulk(self, summary: dict[str, Any]) -> None:
        """The bulk summary: outcomes, failures (``"Class: message"``), hand-offs."""
        self.outcomes.update({k: v for k, v in summary["outcomes"].items() if v})
        for failure in summary["failed"]:
            self.failures[failure["error"].split(":", 1)[0]] += 1
        self.handed_off = summary["handed_off"]


@dataclass
class Report:
    tally: Tally
    stats: dict[str, Any]
    summary: dict[str, Any]
    metrics: MetricsFigures | None = None
    confirmed: int | None = None  # cancellations Kraken's notifications confirmed

    def rows(self) -> list[tuple[str, str]]:
        t, stats = self.tally, self.stats
        cancelled = self.summary["by_state"].get("cancelled", 0)  # hand-offs included
        rows = [("cancelled", str(cancelled))]
        rows.append(("  by cancel_request.delay()", str(t.by_task)))
        if t.confirmed_on_retry:
            rows.append(("    confirmed on retry", str(t.confirmed_on_retry)))
        by_bulk = f"{cancelled - t.by_task}"
        if t.handed_off:
            by_bulk += f" ({t.handed_off} handed to cancel_request)"
        rows.append(("  by bulk_cancel", by_bulk))
        if self.confirmed is not None:
            rows.append(("confirmed by Kraken", f"{self.confirmed} of {cancelled} by webhook"))
        for outcome in ("already_cancelled", "not_cancellable", "not_found"):
            if t.outcomes[outcome]:
                rows.append((outcome.replace("_", " "), str(t.outcomes[outcome])))
        rows.append(("failed", str(sum(t.failures.values()))))
        for error, count in t.failures.most_common():
            rows.append((f"  {error}", str(count)))
        if t.unfinished:
            rows.append(("unfinished", str(t.unfinished)))
        met = self.faults_met()
        rows.append(("retried", f"{sum(met.values())} of {stats['requests']} Kraken calls"))
        for error, count in met.most_common():
            rows.append((f"  {error}", str(count)))
        if t.failures:
            rows.append(("  (the last call of a failed task was not)", ""))
        rows.append(("nonce rejections", str(stats["nonce_rejections"])))
        rows.append(("throughput", f"{t.done / t.seconds:.0f} cancels/s" if t.seconds else "-"))
        return rows

    def faults_met(self) -> Counter[str]:
        """Failed calls by the error class the client saw: the simulator's own count of the
        faults it injected (it sees every call, those of tasks and of bulk chunks alike)."""
        met: Counter[str] = Counter()
        for kind, count in self.stats["faults_injected"].items():
            if count:
                met[FAULT_ERRORS.get(kind, kind)] += count
        return met

    def problems(self) -> list[str]:
        t, by_state = self.tally, self.summary["by_state"]
        found = []
        if t.failures:
            found.append(f"{sum(t.failures.values())} cancellation(s) failed")
        if t.unfinished:
            found.append(f"{t.unfinished} cancellation(s) did not finish in time")
        cancelled = by_state.get("cancelled", 0)
        if self.confirmed is not None and self.confirmed < cancelled:
            found.append(f"{cancelled - self.confirmed} cancellation(s) not confirmed by Kraken")
        if by_state.get("pending", 0):
            found.append(f"{by_state['pending']} payment request(s) still pending")
        if self.stats["nonce_rejections"]:
            found.append(f"{self.stats['nonce_rejections']} nonce(s) rejected by Kraken")
        if self.metrics is not None and self.metrics.calls != self.stats["requests"]:
            found.append(
                f"/metrics counted {self.metrics.calls:.0f} Kraken calls, the simulator "
                f"{self.stats['requests']}"
            )
        return found


class Printer:
    """Lines for the person watching; a progress line redrawn in place on a terminal."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.tty = out.isatty()
        self._last_step = -1
        self._last_line = ""

    def __call__(self, line: str) -> None:
        print(line, file=self.out, flush=True)

    def progress(self, tally: Tally, final: bool = False) -> None:
        failed = sum(tally.failures.values())
        line = f"cancelling   {tally.done}/{tally.sent} done, {failed} failed"
        if self.tty:
            print(f"\r{line}", end="\n" if final else "", file=self.out, flush=True)
            return
        step = tally.done * 4 // max(1, tally.sent)  # a line at each quarter when not a tty
        if (step != self._last_step or final) and line != self._last_line:
            self._last_step, self._last_line = step, line
            self(line)

    def table(self, rows: list[tuple[str, str]]) -> None:
        width = max(len(label) for label, _ in rows)
        self("")
        for label, value in rows:
            self(f"  {label:<{width}}  {value}")
        self("")

    def tail_of_logs(self, nodes: Sequence[Worker], lines: int = 5) -> None:
        for node in nodes:
            tail = [line for line in node.log().splitlines() if "ERROR" in line][-lines:]
            for line in tail:
                self(f"  {node.hostname}: {line.strip()}")
