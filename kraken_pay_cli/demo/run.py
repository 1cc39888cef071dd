"""``kraken-pay demo``: the whole system on this machine, against the simulator, in seconds.

What runs: the Kraken Pay simulator (in this process, failing about one Kraken call in ten
in six ways), a Redis, and two ``celery -A tasks worker`` processes with the simulator's
demo key. The demo creates payment requests in the simulator, cancels two thirds of them
through ``cancel_request.delay()`` and the rest through one ``bulk_cancel``, and prints what
happened: outcomes, failures, retries by error class, nonce rejections, throughput, and how
many cancellations Kraken confirmed by webhook (the simulator notifies a receiver in this
process, whose ``handle_callback`` tasks the workers run; see
:mod:`kraken_pay_cli.demo.webhooks`).

The Redis is the one at ``REDIS_URL`` if it answers, in a database the demo finds empty and
empties again on the way out (:mod:`kraken_pay_cli.demo.database`); otherwise a
``redis-server`` it starts, or, without one installed, fakeredis's server in this process.
Everything the demo starts is stopped on the way out, on Ctrl-C and SIGTERM too.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from kraken.pay.simulator import SimulatorThread
from kraken_pay_cli.app import release_results
from kraken_pay_cli.demo.database import DemoError, demo_redis
from kraken_pay_cli.demo.faults import FAULT_KINDS, fault_spec
from kraken_pay_cli.demo.metrics import MetricsFigures, metrics_figures
from kraken_pay_cli.demo.report import Printer, Report, Tally
from kraken_pay_cli.demo.webhooks import HOOK, receiver, wait_confirmed
from kraken_pay_cli.local import DEMO_TUNING, Worker, WorkerError, free_port, wait_answering
from kraken_pay_cli.local import worker_env as local_worker_env

__all__ = ["DemoError", "DemoOptions", "run_demo", "split_ids", "worker_env"]

_STOP_TIMEOUT = 10.0  # seconds workers get for a warm shutdown before SIGKILL
_READY_TIMEOUT = 60.0  # seconds the workers get to answer
_CONFIRM_TIMEOUT = 15.0  # seconds the notifications get to be handled once cancels are done
_SETTLE_TIMEOUT = 5.0  # seconds the simulator's and the workers' call counts get to agree
_SETTLE_POLL = 0.2


@dataclass(frozen=True)
class DemoOptions:
    requests: int = 300
    paid: int = 10  # of which already paid: "not cancellable" is an outcome, not a failure
    workers: int = 2
    concurrency: int = 2
    fault_rate: float = 0.1
    seed: int | None = None
    bulk_share: float = 1 / 3  # of the ids, the share cancelled by one bulk_cancel
    timeout: float = 120.0  # seconds for all cancellations before the demo gives up


def run_demo(options: DemoOptions, out: TextIO = sys.stdout) -> int:
    """Run the demo; the exit status is 0 only when every cancellation got its outcome."""
    stack = contextlib.ExitStack()
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)  # as Ctrl-C
    try:
        return _run(stack, options, Printer(out))
    except WorkerError as exc:
        raise DemoError(exc.summary) from None
    finally:
        _ignore_signals()  # a second Ctrl-C must not cut the clean-up short
        try:
            stack.close()
        finally:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            signal.signal(signal.SIGTERM, previous)


def _run(stack: contextlib.ExitStack, options: DemoOptions, say: Printer) -> int:
    workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="kraken-pay-demo-")))
    redis_url, where = demo_redis(stack)
    say(f"Redis        {where}")
    sim = stack.enter_context(SimulatorThread(seed=options.seed))
    say(f"simulator    {sim.url} (Kraken Pay, demo key)")
    env = worker_env(sim.url, redis_url)
    os.environ["KRAKEN_JWKS_URL"] = sim.jwks_url  # the receiver verifies with the simulator's
    app = _use_broker(env)
    stack.callback(release_results)
    nodes = [
        _start_worker(stack, env, n + 1, options.concurrency, workdir)
        for n in range(options.workers)
    ]
    ids = _create_requests(sim, options)
    say(f"requests     {len(ids)} payment requests created, {options.paid} of them already paid")
    wait_answering(app, nodes, _READY_TIMEOUT)
    say(f"workers      {len(nodes)} celery workers (prefork, {options.concurrency} processes each)")
    _receive_notifications(stack, sim, say)
    sim.set_faults(fault_spec(options.fault_rate))
    kinds = ", ".join(FAULT_KINDS)
    say(f"faults       about {options.fault_rate:.0%} of Kraken calls fail: {kinds}")
    by_task, by_bulk = split_ids(ids, options.bulk_share)
    say(f"cancelling   {len(by_task)} with cancel_request.delay(), {len(by_bulk)} with bulk_cancel")
    tally = _cancel_all(by_task, by_bulk, options.timeout, nodes, sim, say)
    sim.clear_faults()
    summary = sim.summary()
    sim.wait_webhooks(_CONFIRM_TIMEOUT)
    expected = summary["by_state"].get("cancelled", 0)
    confirmed = wait_confirmed(redis_url, expected, _CONFIRM_TIMEOUT)
    stats, figures = _settled_counts(
        sim, [f"http://127.0.0.1:{port}/metrics" for port in _ports(nodes)]
    )
    report = Report(tally, stats, summary, confirmed=confirmed)
    say.table(report.rows())
    say(f"from /metrics of the {len(nodes)} workers (KRAKEN_PAY_METRICS_PORT):")
    say.table(figures.rows())
    report.metrics = figures
    for problem in report.problems():
        say(f"problem: {problem}")
    if report.problems():
        say.tail_of_logs(nodes)
        return 1
    return 0


def _settled_counts(sim: SimulatorThread, urls: list[str]) -> tuple[dict[str, Any], MetricsFigures]:
    """The simulator's counts and the workers' /metrics once they agree on the calls made,
    or as they stand after ``_SETTLE_TIMEOUT``: a call may still land after the last outcome
    (a late retry or relay), and the two reads are not one instant."""
    deadline = time.monotonic() + _SETTLE_TIMEOUT
    while True:
        stats, figures = sim.stats(), metrics_figures(urls)
        if figures.calls == stats["requests"] or time.monotonic() > deadline:
            return stats, figures
        time.sleep(_SETTLE_POLL)


def worker_env(sim_url: str, redis_url: str) -> dict[str, str]:
    """A demo worker's environment: the simulator, its demo key, the demo's Redis, quick
    retries, and the hook that counts the cancellations Kraken confirmed."""
    return local_worker_env(sim_url, redis_url, tuning=DEMO_TUNING, KRAKEN_CALLBACK_HOOK=HOOK)


def _start_worker(
    stack: contextlib.ExitStack, env: dict[str, str], n: int, concurrency: int, workdir: Path
) -> Worker:
    """Worker ``n``, serving its figures on a port of its own, stopped on the way out.

    Its name carries the demo's pid, so the demo's own workers can be told from others'.
    """
    env = env | {"KRAKEN_PAY_METRICS_PORT": str(free_port())}
    name, host = f"demo{n}-{os.getpid()}", socket.gethostname()
    node = Worker(env, None, workdir, concurrency=concurrency, name=name, host=host)
    stack.callback(node.stop, _STOP_TIMEOUT)
    node.start()
    return node


def _ports(nodes: list[Worker]) -> list[str]:
    return [node.env["KRAKEN_PAY_METRICS_PORT"] for node in nodes]


def _use_broker(env: dict[str, str]) -> Any:
    """Point this process's Celery app at the demo's Redis before it connects anywhere."""
    from tasks.settings import forget
    from tasks.standalone import standalone_app

    for name in ("REDIS_URL", "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND"):
        os.environ.pop(name, None)
    os.environ["REDIS_URL"] = env["REDIS_URL"]
    app = standalone_app()
    forget(app)
    app.conf.update(broker_url=env["REDIS_URL"], result_backend=env["REDIS_URL"])
    return app


def _receive_notifications(stack: contextlib.ExitStack, sim: SimulatorThread, say: Printer) -> None:
    """The receiver in this process, registered with the simulator; on the way out the
    simulator forgets it first, then it stops, before the workers do."""
    from tasks.standalone import standalone_app

    sim.register_webhook(stack.enter_context(receiver(standalone_app())))
    stack.callback(sim.clear_webhooks)
    say(f"receiver     {sim.webhooks()[0]} (Kraken's notifications, to handle_callback)")


def _create_requests(sim: SimulatorThread, options: DemoOptions) -> list[str]:
    from kraken.pay import normalize_external_id

    ids = [uuid.uuid4() for _ in range(options.requests)]
    paid = min(options.paid, len(ids))
    sim.create_requests(ids[paid:], "pending")
    sim.create_requests(ids[:paid], "paid")
    return [normalize_external_id(value) for value in ids]


def split_ids(ids: list[str], share: float) -> tuple[list[str], list[str]]:
    """(ids for one ``cancel_request`` each, ids for one ``bulk_cancel``), already paid ones
    spread over both."""
    every = max(1, round(1 / share)) if share > 0 else 0
    if not every:
        return ids, []
    by_bulk = ids[every - 1 :: every]
    chosen = set(by_bulk)
    return [eid for eid in ids if eid not in chosen], by_bulk


# ----------------------------------------------------------------------------- the run


def _cancel_all(
    by_task: list[str],
    by_bulk: list[str],
    timeout: float,
    nodes: list[Worker],
    sim: SimulatorThread,
    say: Printer,
) -> Tally:
    """Queue one ``cancel_request`` per id of ``by_task`` and one ``bulk_cancel`` of
    ``by_bulk``; collect the results as they arrive, then wait for what the bulk handed off."""
    from celery.exceptions import TimeoutError as CeleryTimeout
    from celery.result import ResultSet

    from tasks import bulk_cancel, cancel_request

    tally = Tally(sent=len(by_task) + len(by_bulk))
    deadline = time.monotonic() + timeout
    started = time.monotonic()
    results = ResultSet([cancel_request.delay(eid) for eid in by_task])
    bulk = bulk_cancel.delay(by_bulk) if by_bulk else None
    chunks = list(getattr(getattr(bulk, "parent", None), "results", None) or [])
    finished: set[str] = set()

    def on_interval() -> None:
        for node in nodes:
            node.check_alive()
        _count_chunks(chunks, finished, tally)
        say.progress(tally)

    try:
        for _, meta in results.iter_native(timeout=timeout, interval=0.1, on_interval=on_interval):
            tally.add(meta["result"])
            say.progress(tally)
        while bulk is not None and not bulk.ready():
            on_interval()
            if time.monotonic() > deadline:
                raise CeleryTimeout
            time.sleep(0.1)
        if bulk is not None:
            tally.bulk_done = len(by_bulk)
            tally.add_bulk(bulk.get(timeout=5))
        _wait_for_hand_offs(sim, tally, deadline)
    except CeleryTimeout:
        tally.unfinished = tally.sent - tally.done
    tally.seconds = time.monotonic() - started
    say.progress(tally, final=True)
    return tally


def _count_chunks(chunks: list[Any], finished: set[str], tally: Tally) -> None:
    for chunk in chunks:
        if chunk.id not in finished and chunk.successful():
            finished.add(chunk.id)
            tally.bulk_done += int(chunk.result.get("total", 0))


def _wait_for_hand_offs(sim: SimulatorThread, tally: Tally, deadline: float) -> None:
    """Ids a chunk handed to ``cancel_request`` have no result here: the simulator tells when
    no request is left pending."""
    from celery.exceptions import TimeoutError as CeleryTimeout

    while tally.handed_off and sim.summary()["by_state"].get("pending", 0):
        if time.monotonic() > deadline:
            raise CeleryTimeout
        time.sleep(0.1)


def _ignore_signals() -> None:
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)
