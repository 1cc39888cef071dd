"""``python -m kraken.pay.simulator`` in a process of its own: it serves the keys it is given
until terminated, and sends its notifications to a receiver in this process, registered over
HTTP or on its command line."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import selectors
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import web
from tasks_support import REPO
from webhook_support import await_until

from kraken.pay import Credentials, KrakenPayClient, normalize_external_id
from kraken.pay.simulator import SimulatorClient
from kraken.pay.webhooks import PayCallback, PayCallbackVerifier, aiohttp_handler

OTHER_SECRET = base64.b64encode(bytes(range(64))).decode()
JWKS_PATH = "/.well-known/pay-callback-keys.json"


def _first_line(process: subprocess.Popen, within: float) -> str:
    """The process's first stdout line, or fail once ``within`` seconds have passed."""
    assert process.stdout is not None
    deadline = time.monotonic() + within
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while not selector.select(timeout=0.1):
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            assert time.monotonic() < deadline, "the simulator did not announce itself in time"
    return process.stdout.readline()


@contextlib.contextmanager
def simulator_process(*args: str, **env: str) -> Iterator[tuple[subprocess.Popen, str]]:
    """The simulator's command on an ephemeral port, ``env`` added to this process's
    environment: the process and its URL; killed after."""
    command = [sys.executable, "-m", "kraken.pay.simulator", "--host", "127.0.0.1", "--port", "0"]
    env = {**os.environ, "PYTHONPATH": str(REPO), **env}
    process = subprocess.Popen(
        [*command, *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = _first_line(process, within=15)
        assert line.startswith("Kraken Pay simulator listening on http://127.0.0.1:"), line
        yield process, line.split()[-1]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


def _post(url: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())


async def _cancel(url: str, credentials: Credentials, eid: str) -> object:
    async with KrakenPayClient(credentials, base_url=url) as client:
        return await client.cancel_request(eid)


def test_module_command_serves_until_terminated():
    keys = ("--key", "cli-key", "--nonce-window", "5")  # its secret: from the environment
    with simulator_process(*keys, KRAKEN_SIM_API_SECRET=OTHER_SECRET) as (process, url):
        eid = normalize_external_id(uuid.uuid4())
        controls = SimulatorClient(url)
        assert controls.create_requests([eid]) == 1
        assert asyncio.run(_cancel(url, Credentials("cli-key", OTHER_SECRET), eid)) == {}
        assert controls.request(eid)["state"] == "cancelled"
        process.terminate()
        assert process.wait(timeout=10) == 0


@pytest.mark.parametrize("register", ["over_http", "on_the_command_line"])
async def test_a_simulator_in_another_process_notifies_this_one(register: str) -> None:
    seen: list[PayCallback] = []
    verifiers: list[PayCallbackVerifier] = []  # known once the simulator's URL is

    async def endpoint(request: web.Request) -> web.StreamResponse:
        return await aiohttp_handler(verifiers[0], seen.append)(request)

    app = web.Application()
    app.router.add_post("/hook", endpoint)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/hook"
    args = ("--webhook", url) if register == "on_the_command_line" else ()
    try:
        with simulator_process(*args) as (_, sim_url):
            verifiers.append(PayCallbackVerifier(sim_url + JWKS_PATH))
            if register == "over_http":
                await asyncio.to_thread(_post, sim_url + "/_sim/webhooks", {"url": url})
            eid = normalize_external_id(uuid.uuid4())
            await asyncio.to_thread(_post, sim_url + "/_sim/requests", {"external_id": eid})
            await asyncio.to_thread(_post, sim_url + "/_sim/requests/pay", {"external_id": eid})
            await await_until(lambda: len(seen) == 1, 10, "the notification")
            assert [(c.external_id, c.status) for c in seen] == [(eid, "success")]
    finally:
        await runner.cleanup()
