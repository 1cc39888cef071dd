"""What the simulator bounds, each bound an option: body sizes per route (refused from the
Content-Length or while streaming), the time to send headers and body, idle kept-alive
connections, JSON nesting, nonces as unsigned 64-bit integers; and where a secret comes from.
"""

from __future__ import annotations

import argparse
import json
import logging

import pytest
from simulator_support import OK, closed_by_server, new_id, opened, post_json, signed

from kraken.pay.simulator import DEMO_API_KEY, DEMO_API_SECRET, Simulator, SimulatorOptions
from kraken.pay.simulator.bodies import nesting_within
from kraken.pay.simulator.cli import add_arguments, main, options_from_args
from kraken.pay.simulator.wire import CANCEL_PATH

INVALID_ARGUMENTS = {"error": ["EGeneral:Invalid arguments"]}
INVALID_NONCE = {"error": ["EAPI:Invalid nonce"]}
OTHER_SECRET = (
    "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4vMDEyMzQ1Njc4OTo7PD0+Pw=="
)


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
