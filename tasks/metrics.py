"""Prometheus metrics of the library's tasks, correct under Celery's prefork pool.

Every pool process counts on its own; a worker of the ``kraken_pay`` queue that has
``KRAKEN_PAY_METRICS_PORT`` set serves the sum of them all on that port. Under prefork that
takes ``prometheus_client``'s multiprocess mode: each process writes its values to files in
``PROMETHEUS_MULTIPROC_DIR``, and the serving process reads them at each scrape. The worker
creates that directory (or empties the one you name) before its pool forks, and removes the
files of each pool process that exits. Nothing happens at import: ``prometheus_client`` is
imported, and the metric objects are created, on first use.

The metrics (see docs/operations.md for alert rules):

* ``kraken_pay_cancellations_total{outcome}``: cancelled, already_cancelled,
  not_cancellable, not_found, failed; by ``cancel_request`` and by bulk chunks alike.
* ``kraken_pay_kraken_calls_total{error_class}``: HTTP calls to Kraken by the class of
  their answer (``none``: a result; ``PayRequestError``: Kraken's answer about the request).
* ``kraken_pay_kraken_call_seconds``: the latency of those calls (a histogram).
* ``kraken_pay_retries_total{error_class}``: failed calls that will be made again.
* ``kraken_pay_nonce_rejections_total{when}``: ``on_time``, an ``EAPI:Invalid nonce`` this
  client received; ``late``, a call that timed out after it was sent, which may still reach
  Kraken after a later nonce and be rejected there unseen (an upper bound on late ones).
* ``kraken_pay_turn_wait_seconds``, ``kraken_pay_budget_wait_seconds``: time spent waiting
  for the key's ordering turn and for the shared rate budget (histograms).
* ``kraken_pay_ledger_open_entries``, ``kraken_pay_ledger_oldest_open_seconds``: read at
  scrape time from the ledger (:func:`ledger_source`; the worker registers it), or from
  any source given to :func:`set_ledger_source`.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from kraken.pay import InvalidNonce, KrakenError, KrakenPayClient, TransportError
from tasks import logs

__all__ = [
    "ObservedClient",
    "cancellation",
    "ledger_source",
    "registry",
    "retry",
    "serve",
    "set_ledger_source",
    "stop_serving",
]

log = logs.logger("tasks.metrics")

MULTIPROC_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_WAIT_BUCKETS = (0.001, 0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

LedgerSource = Callable[[], tuple[int, float]]  # (open entries, age of the oldest in seconds)

_lock = threading.Lock()
_metrics: dict[str, Any] | None = None
_registry: Any = None
_ledger: LedgerSource | None = None
_server: Any = None
_owned_dir: str | None = None


def _build() -> dict[str, Any]:
    global _registry
    from prometheus_client import CollectorRegistry, Counter, Histogram

    _registry = CollectorRegistry(auto_describe=True)
    reg = {"registry": _registry}
    return {
        "cancellations": Counter(
            "kraken_pay_cancellations",
            "Cancellations by outcome (failed: the task or the bulk item failed).",
            ["outcome"],
            **reg,
        ),
        "calls": Counter(
            "kraken_pay_kraken_calls",
            "HTTP calls to Kraken by the class of their answer (none: a result).",
            ["error_class"],
            **reg,
        ),
        "call_seconds": Histogram(
            "kraken_pay_kraken_call_seconds",
            "Latency of one HTTP call to Kraken.",
            buckets=_LATENCY_BUCKETS,
            **reg,
        ),
        "retries": Counter(
            "kraken_pay_retries",
            "Failed calls that will be made again, by error class.",
            ["error_class"],
            **reg,
        ),
        "nonce_rejections": Counter(
            "kraken_pay_nonce_rejections",
            "on_time: EAPI:Invalid nonce received; late: a sent call timed out and may land "
            "after a later nonce.",
            ["when"],
            **reg,
        ),
        "turn_wait": Histogram(
            "kraken_pay_turn_wait_seconds",
            "Time waiting for the key's ordering turn.",
            buckets=_WAIT_BUCKETS,
            **reg,
        ),
        "budget_wait": Histogram(
            "kraken_pay_budget_wait_seconds",
            "Time waiting for the key's shared rate budget.",
            buckets=_WAIT_BUCKETS,
            **reg,
        ),
    }


def _zeros(metrics: dict[str, Any]) -> dict[str, Any]:
    """The series alerts watch exist from the start, at 0, rather than appear on first use."""
    for outcome in ("cancelled", "failed"):
        metrics["cancellations"].labels(outcome=outcome)
    for when in ("on_time", "late"):
        metrics["nonce_rejections"].labels(when=when)
    return metrics


def _get(name: str) -> Any:
    global _metrics
    metrics = _metrics
    if metrics is None:
        with _lock:
            if _metrics is None:
                _metrics = _zeros(_build())
            metrics = _metrics
    return metrics[name]


def registry() -> Any:
    """This process's own registry of the metric objects (single-process use, tests)."""
    _get("calls")
    return _registry


# ----------------------------------------------------------------------------- what is counted


def cancellation(outcome: str, count: int = 1) -> None:
    """``count`` cancellations ended with ``outcome`` (or ``failed``)."""
    if count:
        _get("cancellations").labels(outcome=outcome).inc(count)


def retry(error: BaseException | str) -> None:
    """A failed call will be made again."""
    name = error if isinstance(error, str) else type(error).__name__
    _get("retries").labels(error_class=name).inc()


def _call(seconds: float, error: BaseException | None) -> None:
    _get("call_seconds").observe(seconds)
    _get("calls").labels(error_class="none" if error is None else type(error).__name__).inc()
    if isinstance(error, InvalidNonce):
        _get("nonce_rejections").labels(when="on_time").inc()
    elif _timed_out_after_sending(error):
        _get("nonce_rejections").labels(when="late").inc()


def _timed_out_after_sending(error: BaseException | None) -> bool:
    return (
        isinstance(error, TransportError)
        and error.ambiguous
        and isinstance(error.__cause__, asyncio.TimeoutError)
    )


# ----------------------------------------------------------------------------- the client


def _timed_turns(ordering_lock: Callable[..., Any]) -> Callable[..., Any]:
    """``ordering_lock`` with the time spent waiting for the key's turn observed."""

    @contextlib.asynccontextmanager
    async def timed(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        started = time.perf_counter()
        async with ordering_lock(*args, **kwargs) as held:
            _get("turn_wait").observe(time.perf_counter() - started)
            yield held

    return timed


def _timed_budget(acquire: Callable[[], Any]) -> Callable[[], Any]:
    """``acquire`` with the time spent waiting for a slot of the rate budget observed."""

    async def timed() -> Any:
        started = time.perf_counter()
        waited = await acquire()
        _get("budget_wait").observe(time.perf_counter() - started)
        return waited

    return timed


class ObservedClient(KrakenPayClient):
    """The workers' client: every HTTP call's latency and answer class, and the waits for
    the turn and the budget, are counted."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # On these instances only: they stay what they are (a RedisNonce, a RateBudget).
        self.nonce.ordering_lock = _timed_turns(self.nonce.ordering_lock)  # type: ignore[method-assign]
        if self.rate_budget is not None:
            self.rate_budget.acquire = _timed_budget(self.rate_budget.acquire)  # type: ignore[method-assign]

    async def _post(self, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            result = await super()._post(*args, **kwargs)
        except KrakenError as exc:
            _call(time.perf_counter() - started, exc)
            raise
        _call(time.perf_counter() - started, None)
        return result


# ----------------------------------------------------------------------------- the ledger


def set_ledger_source(source: LedgerSource | None) -> None:
    """Export the ledger's open entries and the age of the oldest, read at each scrape.

    ``source()`` returns ``(open entries, seconds since the oldest open entry was
    recorded)`` (0 seconds when none is open); it runs in the serving process, so it must
    be quick (two Redis or SQL reads). An exception in it drops the two gauges from that
    scrape, never the others.
    """
    global _ledger
    _ledger = source


_LEDGER_SCAN = 10_000  # open entries read per scrape for the oldest one's age


def ledger_source(ledger: Any, scan: int = _LEDGER_SCAN) -> LedgerSource:
    """The source for ``tasks.ledger.Ledger``: its open entries, and the oldest's age.

    The age is the larger of: how long the oldest open entry that is not a scheduled one
    waiting for its time has been open (by ``asked_at``, among the first ``scan`` entries
    read, so a scrape stays bounded), and how far the earliest "news expected by" deadline
    is past (a scheduled cancellation that beat did not send, an entry the relay did not
    re-send).
    """

    def read() -> tuple[int, float]:
        entries = ledger.open_count()
        if not entries:
            return 0, 0.0
        seconds, micros = ledger.redis.time()
        now = seconds + micros / 1e6
        oldest = 0.0
        earliest = ledger.redis.zrange(ledger.due_key, 0, 0, withscores=True)
        if earliest:
            oldest = max(oldest, now - float(earliest[0][1]))
        for n, (_, raw) in enumerate(ledger.redis.hscan_iter(ledger.open_key, count=1000)):
            if n >= scan:
                break
            entry = json.loads(raw)
            if entry.get("state") != "scheduled" and entry.get("asked_at"):
                oldest = max(oldest, now - float(entry["asked_at"]))
        return entries, oldest

    return read


class _LedgerCollector:
    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        source = _ledger
        if source is None:
            return
        try:
            entries, oldest = source()
        except Exception as exc:  # a scrape must not fail for the ledger's sake
            log.warning("ledger metrics unavailable: %s", type(exc).__name__)
            return
        yield GaugeMetricFamily(
            "kraken_pay_ledger_open_entries", "Cancellations not yet finished.", value=entries
        )
        yield GaugeMetricFamily(
            "kraken_pay_ledger_oldest_open_seconds",
            "Age of the oldest open ledger entry.",
            value=oldest,
        )

    def describe(self) -> list[Any]:
        return []


# ----------------------------------------------------------------------------- serving


def prepare_multiprocess() -> str:
    """Before the pool forks: a multiprocess directory of this worker's, emptied."""
    global _owned_dir
    path = os.environ.get(MULTIPROC_VARIABLE, "").strip()
    if path:
        os.makedirs(path, exist_ok=True)
        for stale in glob.glob(os.path.join(path, "*.db")):  # a previous run's values
            os.remove(stale)
    else:
        path = _owned_dir = tempfile.mkdtemp(prefix="kraken-pay-metrics-")
        os.environ[MULTIPROC_VARIABLE] = path
    import prometheus_client.values as values

    values.ValueClass = values.get_value_class()  # if something imported it before us
    return path


def serve(port: int, addr: str = "0.0.0.0") -> None:
    """Serve ``/metrics`` on ``port``: the sum over every process of this worker."""
    global _server
    from prometheus_client import CollectorRegistry, start_http_server
    from prometheus_client.multiprocess import MultiProcessCollector

    path = prepare_multiprocess()
    served = CollectorRegistry()
    MultiProcessCollector(served, path=path)
    served.register(_LedgerCollector())
    _server = start_http_server(port, addr=addr, registry=served)
    log.info("metrics on port %d", port, extra={"event": "metrics.serving", "port": port})


def process_exited(pid: int | None = None) -> None:
    """A pool process ends: its live values go (counters and histograms stay summed)."""
    path = os.environ.get(MULTIPROC_VARIABLE)
    if path and os.path.isdir(path):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid or os.getpid(), path)


def stop_serving() -> None:
    """The worker stops: close the server and remove the directory it created."""
    global _server, _owned_dir
    server, _server = _server, None
    if server is not None:
        httpd = server[0] if isinstance(server, tuple) else None
        if httpd is not None:
            httpd.shutdown()
    if _owned_dir is not None:
        shutil.rmtree(_owned_dir, ignore_errors=True)
        _owned_dir = None


# ----------------------------------------------------------------------------- reading


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(url: str, timeout: float = 5.0) -> Samples:
    """``{(sample name, sorted labels): value}`` read from a ``/metrics`` URL."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(url, timeout=timeout) as response:
        text = response.read(16 << 20).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def summed(samples: Samples, name: str, **labels: str) -> float:
    """The sum of the samples ``name`` whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, lab), v in samples.items() if n == name and wanted <= set(lab))


def by_label(samples: Samples, name: str, label: str) -> dict[str, float]:
    """The samples ``name`` summed by the value of ``label``."""
    found: dict[str, float] = {}
    for (n, labels), value in samples.items():
        key = dict(labels).get(label)
        if n == name and key is not None:
            found[key] = found.get(key, 0.0) + value
    return found
