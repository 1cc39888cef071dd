"""Simulator options: one frozen dataclass that the classes, serve() and the command line build;
for benchmarks, answers held by a latency and form bodies for classic clients."""

from __future__ import annotations

import argparse
import time
import urllib.parse
import uuid
from dataclasses import fields, replace

import aiohttp
import pytest
from tasks_support import REPO

from kraken.pay import Credentials, KrakenPayClient, normalize_external_id
from kraken.pay.client import CANCEL_REQUEST_PATH
from kraken.pay.simulator import (
    DEMO_API_KEY,
    DEMO_API_SECRET,
    Simulator,
    SimulatorOptions,
    SimulatorThread,
    cli,
)
from kraken.pay.simulator.cli import DEFAULT_PORT, _parser, add_arguments, main, options_from_args

CREDS = Credentials(DEMO_API_KEY, DEMO_API_SECRET)


async def _form_cancel(sim: Simulator, eid: str, nonce: int) -> dict:
    body = urllib.parse.urlencode({"nonce": nonce, "external_id": eid}).encode()
    headers = {
        "API-Key": DEMO_API_KEY,
        "API-Sign": CREDS.sign(CANCEL_REQUEST_PATH, nonce, body),
        "Content-Type": "application/x-www-form-urlencoded",
    }
    url = sim.url + CANCEL_REQUEST_PATH
    async with aiohttp.ClientSession() as http, http.post(url, data=body, headers=headers) as r:
        return await r.json()


@pytest.mark.parametrize(("accept_form", "applied"), [(False, 0), (True, 1)])
async def test_a_form_body_is_a_cancel_only_with_accept_form(accept_form, applied):
    eid = normalize_external_id(uuid.uuid4())
    async with Simulator(accept_form=accept_form) as sim:
        sim.create_requests([eid])
        answer = await _form_cancel(sim, eid, time.time_ns())
        assert sim.stats()["cancels_applied"] == applied
        assert (answer["error"] == []) is bool(applied)


async def test_latency_holds_each_answer_and_the_call_still_applies():
    eid = normalize_external_id(uuid.uuid4())
    async with Simulator(latency=(0.2, 0.2)) as sim:
        sim.create_requests([eid])
        async with KrakenPayClient(CREDS, base_url=sim.url) as client:
            started = time.perf_counter()
            await client.cancel_request(eid)
            assert time.perf_counter() - started >= 0.2
        assert sim.request(eid)["state"] == "cancelled"


def test_bad_latency_is_refused_naming_the_field():
    with pytest.raises(ValueError, match="latency"):
        Simulator(latency=(0.5, 0.1))
    with pytest.raises(SystemExit):
        _parser().parse_args(["--latency", "fast"])
    assert _parser().parse_args(["--latency", "20:50"]).latency == (0.02, 0.05)


# ------------------------------------------------------------------------ one list of options


def test_every_way_of_running_the_simulator_builds_the_same_options():
    options = SimulatorOptions(nonce_window=10, seed=3, latency=(0.01, 0.02))
    assert Simulator(nonce_window=10, seed=3, latency=(0.01, 0.02)).options == options
    assert Simulator(options=options).options is options
    assert SimulatorThread(options=options, seed=4).options == replace(options, seed=4)
    keys = {"k": DEMO_API_SECRET}
    assert Simulator(keys, options=options).options.keys == keys
    with pytest.raises(TypeError, match="no_such_option"):
        Simulator(no_such_option=1)


def test_every_option_is_a_flag_of_the_command_line():
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    flags = {action.dest for action in parser._actions}
    assert {f.name for f in fields(SimulatorOptions)} <= flags | {"keys"}
    assert "keys" in flags and "secrets" in flags


def test_the_command_line_defaults_are_the_options_defaults_but_the_port():
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    options = options_from_args(parser.parse_args([]), environ={})
    assert options == replace(SimulatorOptions(), port=DEFAULT_PORT)
    argv = ["--port", "0", "--seed", "5", "--rate-limit", "15:0.33", "--accept-form"]
    argv += ["--webhook", "http://127.0.0.1:9/a", "--webhook", "http://127.0.0.1:9/b"]
    options = options_from_args(parser.parse_args(argv), environ={})
    assert (options.port, options.seed, options.rate_limit, options.accept_form) == (
        0,
        5,
        (15.0, 0.33),
        True,
    )
    assert options.webhooks == ("http://127.0.0.1:9/a", "http://127.0.0.1:9/b")


async def test_webhooks_of_the_options_are_registered_and_survive_a_reset():
    async with Simulator(webhooks=["http://127.0.0.1:9/hook"]) as sim:
        sim.register_webhook("http://127.0.0.1:9/other")
        sim.reset()
        assert sim.webhooks() == ["http://127.0.0.1:9/hook"]


def test_serve_builds_its_options_from_keywords(monkeypatch):
    seen = []
    monkeypatch.setattr(cli, "run", lambda options, on_ready: seen.append(options))
    cli.serve("127.0.0.1", 0, seed=9, header_timeout=1.5)
    assert seen == [SimulatorOptions(port=0, seed=9, header_timeout=1.5)]


def test_main_returns_its_status_and_never_exits(capsys):
    assert main(["--help"]) == 0
    assert "--secret-file" in capsys.readouterr().out
    assert main(["--max-api-body", "12"]) == 2
    assert "max_api_body: must be a whole number" in capsys.readouterr().err


def test_docs_list_every_option():
    docs = (REPO / "docs" / "simulator.md").read_text()
    missing = [f.name for f in fields(SimulatorOptions) if f"| `{f.name}` |" not in docs]
    assert not missing, f"docs/simulator.md does not list {missing}"
