"""The demo's last table: the figures its workers serve on ``/metrics``, added up.

The same numbers an operator's Prometheus would read, so the demo shows what the alert
rules of docs/operations.md look at, and checks them against the simulator's own counts.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from tasks import metrics

__all__ = ["MetricsFigures", "metrics_figures"]


@dataclass
class MetricsFigures:
    cancellations: dict[str, float] = field(default_factory=dict)
    calls_by_class: dict[str, float] = field(default_factory=dict)
    retries: float = 0.0
    nonce_rejections: dict[str, float] = field(default_factory=dict)
    call_seconds: float = 0.0
    turn_wait_seconds: float = 0.0
    budget_wait_seconds: float = 0.0
    unreadable: list[str] = field(default_factory=list)

    @property
    def calls(self) -> float:
        return sum(self.calls_by_class.values())

    def rows(self) -> list[tuple[str, str]]:
        done = sum(self.cancellations.values())
        rows = [("kraken_pay_cancellations_total", f"{done:.0f}")]
        rows += [(f"  outcome={k}", f"{v:.0f}") for k, v in sorted(self.cancellations.items())]
        rows.append(("kraken_pay_kraken_calls_total", f"{self.calls:.0f}"))
        rows += [(f"  error_class={k}", f"{v:.0f}") for k, v in sorted(self.calls_by_class.items())]
        rows.append(("kraken_pay_retries_total", f"{self.retries:.0f}"))
        rejections = sum(self.nonce_rejections.values())
        rows.append(("kraken_pay_nonce_rejections_total", f"{rejections:.0f}"))
        mean = self.call_seconds / self.calls * 1000 if self.calls else 0.0
        rows.append(("kraken_pay_kraken_call_seconds", f"{mean:.1f} ms a call on average"))
        rows.append(("kraken_pay_turn_wait_seconds", f"{self.turn_wait_seconds:.2f} s in all"))
        rows.append(("kraken_pay_budget_wait_seconds", f"{self.budget_wait_seconds:.2f} s in all"))
        rows += [(f"unreadable: {url}", "") for url in self.unreadable]
        return rows


def _add(into: dict[str, float], more: dict[str, float]) -> None:
    for key, value in more.items():
        into[key] = into.get(key, 0.0) + value


def metrics_figures(urls: Iterable[str]) -> MetricsFigures:
    """The figures of every worker at ``urls``, summed."""
    figures = MetricsFigures()
    for url in urls:
        try:
            samples = metrics.scrape(url)
        except OSError:
            figures.unreadable.append(url)
            continue
        _add(
            figures.cancellations,
            metrics.by_label(samples, "kraken_pay_cancellations_total", "outcome"),
        )
        _add(
            figures.calls_by_class,
            metrics.by_label(samples, "kraken_pay_kraken_calls_total", "error_class"),
        )
        _add(
            figures.nonce_rejections,
            metrics.by_label(samples, "kraken_pay_nonce_rejections_total", "when"),
        )
        figures.retries += metrics.summed(samples, "kraken_pay_retries_total")
        figures.call_seconds += metrics.summed(samples, "kraken_pay_kraken_call_seconds_sum")
        figures.turn_wait_seconds += metrics.summed(samples, "kraken_pay_turn_wait_seconds_sum")
        figures.budget_wait_seconds += metrics.summed(samples, "kraken_pay_budget_wait_seconds_sum")
    return figures
