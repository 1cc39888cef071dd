"""Our serial client beside other Kraken clients: signed cancels against one simulator, one run.

Run: ``.venv/bin/python bench/peers.py [--count 1000] [--rounds 3] [--venvs DIR]``.

Peers: python-kraken-sdk's sequential ``SpotClient`` and its ``SpotAsyncClient`` (both through
their generic ``request(..., do_json=True)``, the way they reach the Pay API) and krakenex
(form bodies only, so the simulator runs with ``--accept-form``). Each peer lives in a venv
of its own, created here by pip (their ``kraken`` import package would shadow ours), and runs
as a subprocess of ``_peer_runner.py``; ours runs the same way from this venv, serial mode,
``RedisNonce``. Each client has an API key of its own at the simulator, since the clients'
nonce units differ. Two measurements, in alternating rounds:

1. one process, one call at a time: calls per second (median) and nonce rejections;
2. ``--processes`` processes sharing the client's key (``--shared-count`` calls in all),
   started by one event: the aggregate rate and the nonce rejections.

Goal: ours ahead of every peer in calls per second, with 0 rejections.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

from _support import print_table, redis_url, sim_call, simulator_process

from kraken.pay import normalize_external_id
from kraken_pay_cli.local import redis_server

RUNNER = Path(__file__).resolve().parent / "_peer_runner.py"
PEERS = {"sdk": "python-kraken-sdk", "sdk-async": "python-kraken-sdk", "krakenex": "krakenex"}
LABELS = {
    "ours": "ours (serial, RedisNonce)",
    "sdk": "python-kraken-sdk SpotClient",
    "sdk-async": "python-kraken-sdk SpotAsyncClient",
    "krakenex": "krakenex",
}


def _venv(root: Path, package: str) -> Path:
    """The Python of a venv holding ``package`` (created once under ``root``)."""
    home = root / package
    python = home / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(home)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", package],
            check=True,
            env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
        )
    return python


def _secret() -> str:
    return base64.b64encode(os.urandom(64)).decode()


@contextlib.contextmanager
def _runners(python: Path, configs: list[dict], workdir: Path) -> Iterator[list[dict]]:
    """Start one runner per config, wait until all are ready, say go; yield their results."""
    procs = []
    try:
        for n, cfg in enumerate(configs):
            path = workdir / f"cfg-{uuid.uuid4().hex}-{n}.json"
            path.write_text(json.dumps(cfg))
            procs.append(
                subprocess.Popen(
                    [str(python), str(RUNNER), str(path)],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                    cwd=workdir,  # not the repo: its kraken/ must not shadow a peer's
                )
            )
        for proc in procs:
            line = proc.stdout.readline() if proc.stdout else ""
            if line.strip() != "ready":
                raise RuntimeError(f"{configs[0]['client']}: runner not ready: {line!r}")
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        results = []
        for proc in procs:
            out, _ = proc.communicate(timeout=600)
            if proc.returncode:
                raise RuntimeError(f"{configs[0]['client']}: runner failed ({proc.returncode})")
            results.append(json.loads(out.strip().splitlines()[-1]))
        yield results
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()


def _run(ctx: dict, client: str, processes: int, count: int) -> tuple[float, int]:
    """Aggregate calls/s of ``processes`` runners of ``client`` over ``count`` fresh ids."""
    url = ctx["url"]
    ids = [normalize_external_id(uuid.uuid4()) for _ in range(count)]
    sim_call(url, "/_sim/requests", {"external_ids": ids})
    key, secret = ctx["keys"][client]
    base = {"client": client, "url": url, "key": key, "secret": secret, "redis_url": ctx["rurl"]}
    configs = [{**base, "ids": ids[i::processes]} for i in range(processes)]
    before = sim_call(url, "/_sim/stats")["nonce_rejections"]
    with _runners(ctx["pythons"][client], configs, ctx["workdir"]) as results:
        seconds = max(r["ended"] for r in results) - min(r["began"] for r in results)
    rejected = sim_call(url, "/_sim/stats")["nonce_rejections"] - before
    return (count - processes) / seconds, rejected  # each runner's first call is a warm-up


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000, help="calls per single-process run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--processes", type=int, default=8)
    parser.add_argument("--shared-count", type=int, default=800)
    parser.add_argument("--venvs", help="where to keep the peers' venvs (default: a temp dir)")
    args = parser.parse_args()

    clients = ["ours", *PEERS]
    keys = {client: (f"bench-{client}", _secret()) for client in clients}
    key_args = [arg for key, secret in keys.values() for arg in ("--key", key, "--secret", secret)]
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-peers-")))
        root = Path(args.venvs) if args.venvs else workdir
        pythons = {"ours": Path(sys.executable)}
        pythons |= {client: _venv(root, package) for client, package in PEERS.items()}
        rurl = stack.enter_context(redis_server(redis_url()))
        url = stack.enter_context(simulator_process("--accept-form", *key_args))
        ctx = {"url": url, "rurl": rurl, "keys": keys, "pythons": pythons, "workdir": workdir}
        for client in clients:  # warm-up: imports, connections, the simulator's first calls
            _run(ctx, client, 1, 50)
        single: dict[str, list[tuple[float, int]]] = {client: [] for client in clients}
        shared: dict[str, list[tuple[float, int]]] = {client: [] for client in clients}
        for _ in range(args.rounds):
            for client in clients:
                single[client].append(_run(ctx, client, 1, args.count))
            for client in clients:
                shared[client].append(_run(ctx, client, args.processes, args.shared_count))

    ours = statistics.median(rate for rate, _ in single["ours"])
    rows = [
        (
            "client",
            "1 process calls/s",
            "ours / it",
            "rejected",
            f"{args.processes} processes calls/s",
            f"rejected per {args.shared_count}",
        )
    ]
    for client in clients:
        rate = statistics.median(r for r, _ in single[client])
        shared_rate = statistics.median(r for r, _ in shared[client])
        rows.append(
            (
                LABELS[client],
                f"{rate:,.0f}",
                f"{ours / rate:.2f}",
                str(sum(n for _, n in single[client])),
                f"{shared_rate:,.0f}",
                "-".join(str(n) for n in sorted({n for _, n in shared[client]})),
            )
        )
    print_table(rows)
    print(
        f"{args.rounds} alternating rounds; rates are medians; rejections summed over the rounds "
        f"(1 process) or their range (shared key)"
    )


if __name__ == "__main__":
    main()
