"""What the simulator bounds, each bound an option: body sizes per route (refused from the
Content-Length or while streaming), the time to send headers and body, idle kept-alive
connections, JSON nesting, nonces as unsigned 64-bit integers; and where a secret comes from.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import time
import uuid
from urllib.parse import urlsplit

import aiohttp
import pytest

from kraken.pay import normalize_external_id, sign
from kraken.pay.simulator import DEMO_API_KEY, DEMO_API_SECRET, Simulator, SimulatorOptions
from kraken.pay.simulator.bodies import nesting_within
from kraken.pay.simulator.cli import add_arguments, main, options_from_args
from kraken.pay.simulator.wire import CANCEL_PATH

INVALID_ARGUMENTS = {"error": ["EGeneral:Invalid arguments"]}
INVALID_NONCE = {"error": ["EAPI:Invalid nonce"]}
OK = {"error": [], "result": {}}
OTHER_SECRET = (
    "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4vMDEyMzQ1Njc4OTo7PD0+Pw=="
)


def new_id() -> str:
    return normalize_external_id(uuid.uuid4())


def signed(payload: dict | str) -> tuple[bytes, dict[str, str]]:
    body = (payload if isinstance(payload, str) else json.dumps(payload)).encode()
    nonce = json.loads(body).get("nonce", "") if isinstance(payload, dict) else ""
    headers = {
        "API-Key": DEMO_API_KEY,
        "API-Sign": sign(CANCEL_PATH, str(nonce), body, DEMO_API_SECRET),
        "Content-Type": "application/json",
    }
    return body, headers


async def post_json(http: aiohttp.ClientSession, url: str, body: bytes, headers=None):
    async with http.post(url, data=body, headers=headers or {}) as response:
        return response.status, await response.read()


async def opened(sim: Simulator) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    parts = urlsplit(sim.url)
    return await asyncio.open_connection(parts.hostname, parts.port)


async def closed_by_server(reader: asyncio.StreamReader, within: float = 5.0) -> bytes:
    """Everything the server sends until it closes the connection, failing after ``within``."""
    return await asyncio.wait_for(reader.read(), within)


def head(path: str, length: int | None = None, **headers: str) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: sim"]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


# ------------------------------------------------------------------------ every bound an option


def test_every_bound_has_a_sane_default():
    options = SimulatorOptions()
    assert (options.max_api_body, options.max_control_body) == (4096, 4 * 2**20)
    assert (options.header_timeout, options.body_timeout, options.keepalive_timeout) == (
        5.0,
        10.0,
        30.0,
    )
    assert options.max_json_depth == 32


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_api_body", 10),
        ("max_api_body", 2**40),
        ("max_control_body", True),
        ("max_json_depth", 0),
        ("max_json_depth", 100_000),
        ("header_timeout", 0),
        ("body_timeout", float("inf")),
        ("keepalive_timeout", float("nan")),
        ("port", 70_000),
        ("webhook_attempts", 0),
        ("rate_limit", (0, 1)),
        ("latency", (0.5, 0.1)),
        ("webhooks", "http://one.example"),
    ],
)
def test_a_bound_outside_its_range_is_refused_naming_it(field, value):
    with pytest.raises(ValueError, match=f"^{field}:"):
        SimulatorOptions(**{field: value})


def test_the_flags_set_every_bound():
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    argv = "--max-api-body 1024 --max-control-body 65536 --max-json-depth 4 --header-timeout 1"
    argv += " --body-timeout 2 --keepalive-timeout 3"
    options = options_from_args(parser.parse_args(argv.split()), environ={})
    assert (options.max_api_body, options.max_control_body, options.max_json_depth) == (
        1024,
        65536,
        4,
    )
    assert (options.header_timeout, options.body_timeout, options.keepalive_timeout) == (1, 2, 3)


# ------------------------------------------------------------------------ body sizes


async def test_a_cancel_body_over_its_limit_is_refused_from_its_content_length():
    async with Simulator() as sim:
        reader, writer = await opened(sim)
        writer.write(head(CANCEL_PATH, 60_000_000))  # announced, never sent
        answer = await closed_by_server(reader)
        writer.close()
        assert answer.startswith(b"HTTP/1.1 413 ")
        assert sim.stats()["bodies_too_large"] == 1 and sim.stats()["cancels_applied"] == 0


async def test_a_streamed_body_is_refused_as_it_passes_the_limit_not_at_its_end():
    async with Simulator(max_api_body=1024) as sim:
        reader, writer = await opened(sim)
        writer.write(head(CANCEL_PATH, Transfer_Encoding="chunked"))
        for _ in range(3):  # 1,536 bytes of an endless body: its end never comes
            writer.write(b"200\r\n" + b" " * 512 + b"\r\n")
        status_line = await asyncio.wait_for(reader.readline(), 5)
        writer.close()
        assert status_line.startswith(b"HTTP/1.1 413 ")


async def test_a_control_body_has_a_larger_limit_of_its_own(http):
    async with Simulator(max_control_body=64 * 1024) as sim:
        ids = [new_id() for _ in range(1000)]  # about 27 KB
        status, _ = await post_json(
            http, sim.url + "/_sim/requests", json.dumps({"external_ids": ids}).encode()
        )
        assert status == 201
        status, raw = await post_json(http, sim.url + "/_sim/requests", b" " * (64 * 1024 + 1))
        assert (status, json.loads(raw)) == (413, {"error": "body: larger than 65,536 bytes"})
        status, _ = await post_json(
            http, sim.url + CANCEL_PATH, json.dumps({"external_ids": ids}).encode()
        )
        assert status == 413  # the Kraken path keeps its own, small limit


# ------------------------------------------------------------------------ time


async def test_connections_that_do_not_finish_their_headers_in_time_are_closed():
    async with Simulator(header_timeout=0.2) as sim:
        connections = [await opened(sim) for _ in range(20)]
        for _, writer in connections:
            writer.write(b"POST /0/private/Pay/request/cancel HTTP/1.1\r\nHost: sim\r\nX-Slow")
        started = time.monotonic()
        answers = await asyncio.gather(*(closed_by_server(reader) for reader, _ in connections))
        assert time.monotonic() - started < 4
        assert answers == [b""] * 20  # closed, nothing answered
        for _, writer in connections:
            writer.close()
        assert sim.stats()["slow_requests"] == 20


async def test_a_connection_that_sent_its_headers_in_time_is_not_cut_by_that_timeout(http):
    # Each answer is held three header timeouts: the timer was disarmed by the headers.
    async with Simulator(header_timeout=0.1, latency=(0.3, 0.3)) as sim:
        ids = [new_id(), new_id()]
        sim.create_requests(ids)
        for nonce, eid in enumerate(ids, start=1):
            body, headers = signed({"nonce": str(nonce), "external_id": eid})
            status, raw = await post_json(http, sim.url + CANCEL_PATH, body, headers)
            assert (status, json.loads(raw)) == (200, OK)
        assert sim.stats()["connections_opened"] == 1 and sim.stats()["slow_requests"] == 0


async def test_an_idle_kept_alive_connection_is_closed_after_the_keepalive_timeout():
    async with Simulator(keepalive_timeout=0.3) as sim:
        reader, writer = await opened(sim)
        writer.write(b"GET /_sim/stats HTTP/1.1\r\nHost: sim\r\n\r\n")
        started = time.monotonic()
        answer = await closed_by_server(reader)
        writer.close()
        assert answer.startswith(b"HTTP/1.1 200 ") and b"keep-alive" not in answer.lower()
        assert 0.2 < time.monotonic() - started < 4


async def test_a_body_that_does_not_arrive_in_time_closes_the_connection_unprocessed():
    async with Simulator(body_timeout=0.2) as sim:
        (eid,) = [new_id()]
        sim.create_requests([eid])
        body, headers = signed({"nonce": "1", "external_id": eid})
        reader, writer = await opened(sim)
        writer.write(
            head(CANCEL_PATH, len(body), API_Key=DEMO_API_KEY, API_Sign=headers["API-Sign"])
        )
        writer.write(body[:10])
        assert await closed_by_server(reader) == b""
        writer.close()
        assert sim.request(eid)["state"] == "pending"
        assert sim.stats()["slow_requests"] == 1


# ------------------------------------------------------------------------ JSON nesting


@pytest.mark.parametrize(
    ("body", "depth", "within"),
    [
        (b'{"a": 1}', 1, True),
        (b'{"a": [1, {"b": []}]}', 4, True),
        (b'{"a": [1, {"b": []}]}', 3, False),
        (b'{"a": "[[[[[[[[", "b": "\\"[[[["}', 1, True),  # brackets in strings do not count
        (b"[" * 50 + b"]" * 50, 49, False),
        (b"[[]][[]][[]]" * 10, 2, True),
        (b"[[[[}}}}" + b"[]" * 40, 40, False),  # unbalanced: never within
    ],
)
def test_nesting_is_measured_without_parsing(body, depth, within):
    assert nesting_within(body, depth) is within


async def test_a_deep_cancel_body_is_invalid_arguments_without_a_traceback(http, caplog):
    deep = "[" * 200_000 + "]" * 200_000
    async with Simulator(max_api_body=2**20) as sim:
        with caplog.at_level(logging.DEBUG):
            for body in (deep, '{"nonce": "1", "x": ' + "[" * 33 + "]" * 33 + "}"):
                status, raw = await post_json(http, sim.url + CANCEL_PATH, *signed(body))
                assert (status, json.loads(raw)) == (200, INVALID_ARGUMENTS)
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
        assert sim.stats()["invalid_arguments"] == 2


async def test_a_deep_control_body_is_400_naming_the_body_without_a_traceback(http, caplog):
    async with Simulator() as sim:
        with caplog.at_level(logging.DEBUG):
            status, raw = await post_json(http, sim.url + "/_sim/faults", b"[" * 200_000)
        assert status == 400
        assert json.loads(raw)["error"] == "body: must be a JSON object, nested at most 32 deep"
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


# ------------------------------------------------------------------------ nonces


@pytest.mark.parametrize(
    ("nonce", "accepted"),
    [
        (2**64 - 1, True),
        (str(2**64 - 1), True),
        (2**64, False),
        (str(2**64), False),
        ("1" * 40, False),  # 40 digits used to pass
        (10**30, False),
        ("0", False),
        (-1, False),
        (1.5, False),
    ],
)
async def test_a_nonce_is_an_unsigned_64_bit_integer_above_zero(http, nonce, accepted):
    async with Simulator() as sim:
        (eid,) = [new_id()]
        sim.create_requests([eid])
        _, raw = await post_json(
            http, sim.url + CANCEL_PATH, *signed({"nonce": nonce, "external_id": eid})
        )
        assert json.loads(raw) == (OK if accepted else INVALID_NONCE)


# ------------------------------------------------------------------------ secrets


def parsed(argv: list[str], environ: dict[str, str]) -> SimulatorOptions:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return options_from_args(parser.parse_args(argv), environ=environ)


def test_a_secret_comes_from_a_file_or_the_environment(tmp_path):
    secret_file = tmp_path / "secret"
    secret_file.write_text(OTHER_SECRET + "\n")
    from_file = parsed(["--key", "k", "--secret-file", str(secret_file)], {})
    assert dict(from_file.keys) == {"k": OTHER_SECRET}
    mixed = parsed(
        [
            "--key",
            "a",
            "--secret",
            DEMO_API_SECRET,
            "--key",
            "b",
            "--secret-file",
            str(secret_file),
        ],
        {},
    )
    assert dict(mixed.keys) == {"a": DEMO_API_SECRET, "b": OTHER_SECRET}
    env = {"KRAKEN_SIM_API_KEY": "env-key", "KRAKEN_SIM_API_SECRET": OTHER_SECRET}
    assert dict(parsed([], env).keys) == {"env-key": OTHER_SECRET}
    assert dict(parsed(["--key", "k"], {"KRAKEN_SIM_API_SECRET": OTHER_SECRET}).keys) == {
        "k": OTHER_SECRET
    }
    assert dict(parsed([], {}).keys) == {DEMO_API_KEY: DEMO_API_SECRET}


@pytest.mark.parametrize(
    ("argv", "environ", "message"),
    [
        (["--key", "k"], {}, "--key: give one --secret"),
        ([], {"KRAKEN_SIM_API_SECRET": OTHER_SECRET}, "KRAKEN_SIM_API_SECRET: name its key"),
        (["--key", "k", "--secret-file", "/no/such/file"], {}, "--secret-file /no/such/file:"),
        (["--key", "k", "--secret", "x", "--key", "k", "--secret", "y"], {}, "--key: each key"),
    ],
)
def test_a_missing_or_unreadable_secret_is_one_line_naming_where(argv, environ, message):
    with pytest.raises(ValueError, match=f"^{message}"):
        parsed(argv, environ)


def test_options_never_show_a_secret(tmp_path, capsys):
    options = SimulatorOptions(keys={"k": OTHER_SECRET})
    assert OTHER_SECRET not in repr(options) and "keys" not in repr(options)
    secret_file = tmp_path / "secret"
    secret_file.write_text("not*base64\n")
    assert main(["--port", "0", "--key", "k", "--secret-file", str(secret_file)]) == 2
    errors = capsys.readouterr().err
    assert "api_secret" in errors and "not*base64" not in errors


async def test_a_malformed_request_head_is_a_400_and_one_log_line(caplog):
    async with Simulator() as sim:
        with caplog.at_level(logging.DEBUG):
            reader, writer = await opened(sim)
            writer.write(b"GET /_sim/stats HTTP/1.1\r\nHost: sim\r\nX-Big: " + b"a" * 10_000)
            writer.write(b"\r\n\r\n")
            answer = await closed_by_server(reader)
            writer.close()
        assert answer.startswith(b"HTTP/1.0 400 ")
        (line,) = [r for r in caplog.records if "Error handling request" in r.getMessage()]
        assert line.levelno == logging.INFO and not line.exc_info
        assert "400 Got more than 8190 bytes" in line.getMessage()
