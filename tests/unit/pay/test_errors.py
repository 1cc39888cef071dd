"""parse_response: every row of DESIGN.md's error table, both error forms, every bad body."""

from __future__ import annotations

import json
import logging

import pytest

from kraken.pay import errors
from kraken.pay.errors import (
    AuthenticationError,
    InvalidNonce,
    InvalidRequest,
    KrakenError,
    MalformedResponse,
    PayRequestError,
    RateLimited,
    ServiceUnavailable,
    TemporaryLockout,
    TerminalError,
    TransientError,
    TransportError,
    UnknownApiError,
    parse_response,
)


def envelope(*errs, result=None) -> bytes:
    body = {"error": list(errs)}
    if result is not None:
        body["result"] = result
    return json.dumps(body).encode()


def structured(error_class: str, message: str, type_: str = "", severity: str = "E") -> dict:
    return {"severity": severity, "errorClass": error_class, "type": type_, "errorMessage": message}


CLASSIC_ROWS = [
    ("EAPI:Rate limit exceeded", RateLimited),
    ("EGeneral:Too many requests", RateLimited),
    ("EOrder:Rate limit exceeded", RateLimited),
    ("EService:Unavailable", ServiceUnavailable),
    ("EService:Busy", ServiceUnavailable),
    ("EService:Deadline elapsed", ServiceUnavailable),
    ("EGeneral:Internal error", ServiceUnavailable),
    ("EDatabase:Internal error", ServiceUnavailable),
    ("EAPI:Invalid nonce", InvalidNonce),
    ("EGeneral:Temporary lockout", TemporaryLockout),
    ("EAPI:Invalid key", AuthenticationError),
    ("EAPI:Invalid signature", AuthenticationError),
    ("EGeneral:Permission denied", AuthenticationError),
    ("EAPI:Feature disabled", AuthenticationError),
    ("EGeneral:Invalid arguments", InvalidRequest),
    ("EGeneral:Unknown method", InvalidRequest),
    ("EAPI:Bad request", InvalidRequest),
]


@pytest.mark.parametrize(("code", "cls"), CLASSIC_ROWS)
def test_classic_error_strings_map_to_their_class(code, cls):
    with pytest.raises(cls) as info:
        parse_response(200, envelope(code))
    assert info.value.code == code
    assert info.value.status == 200
    assert info.value.raw == [code]


@pytest.mark.parametrize(("code", "cls"), CLASSIC_ROWS)
def test_structured_errors_map_like_their_classic_twin(code, cls):
    error_class, message = code.split(":")
    with pytest.raises(cls) as info:
        parse_response(200, envelope(structured(error_class, message, "SomeType")))
    assert info.value.errors[0].type == "SomeType"
    assert info.value.raw[0]["errorClass"] == error_class


@pytest.mark.parametrize(
    ("cls", "transient"),
    [
        (TransportError, True),
        (MalformedResponse, True),
        (RateLimited, True),
        (ServiceUnavailable, True),
        (InvalidNonce, True),
        (TemporaryLockout, True),
        (AuthenticationError, False),
        (InvalidRequest, False),
        (PayRequestError, False),
        (UnknownApiError, False),
    ],
)
def test_every_error_says_whether_it_is_transient(cls, transient):
    assert issubclass(cls, KrakenError)
    assert cls.transient is transient
    assert issubclass(cls, TransientError if transient else TerminalError)


def test_throttled_with_spaces_and_timestamp_is_rate_limited():
    with pytest.raises(RateLimited):
        parse_response(200, envelope("EService: Throttled: 1700000000"))


def test_classic_error_with_detail_keeps_its_class():
    with pytest.raises(InvalidRequest) as info:
        parse_response(200, envelope("EGeneral:Invalid arguments:external_id"))
    assert "external_id" in str(info.value)


@pytest.mark.parametrize(
    ("pay_type", "reason"),
    [
        ("RequestNotFound", "not_found"),
        ("RequestAlreadyCancelled", "already_cancelled"),
        ("RequestNotCancellable", "not_cancellable"),
        ("SomethingNew", None),
    ],
)
def test_structured_pay_errors_carry_a_reason(pay_type, reason):
    with pytest.raises(PayRequestError) as info:
        parse_response(200, envelope(structured("EPay", "no such request", pay_type)))
    assert info.value.reason == reason
    assert info.value.errors[0].type == pay_type


def test_unknown_error_is_terminal_and_keeps_the_raw_error():
    raw = structured("EFuture", "Something unheard of", "NewType")
    with pytest.raises(UnknownApiError) as info:
        parse_response(200, envelope(raw))
    assert not info.value.transient
    assert info.value.raw == [raw]


def test_success_returns_result():
    assert parse_response(200, envelope(result={"ok": True})) == {"ok": True}


def test_success_without_result_key_but_empty_error_returns_empty_result():
    assert parse_response(200, envelope()) == {}


def test_warnings_are_logged_not_raised(caplog):
    body = envelope(structured("WGeneral", "Deprecated", severity="W"), result={"ok": 1})
    with caplog.at_level(logging.WARNING, logger="kraken"):
        assert parse_response(200, body) == {"ok": 1}
    assert "WGeneral:Deprecated" in caplog.text


def test_classic_warning_string_is_not_raised():
    assert parse_response(200, envelope("WGeneral:Something", result={})) == {}


def test_http_429_is_rate_limited_with_retry_after():
    with pytest.raises(RateLimited) as info:
        parse_response(429, b"Too Many Requests", {"Retry-After": "7"})
    assert info.value.retry_after == 7.0
    assert info.value.status == 429


def test_rate_limit_error_in_body_honours_retry_after_header():
    with pytest.raises(RateLimited) as info:
        parse_response(200, envelope("EAPI:Rate limit exceeded"), {"Retry-After": "3"})
    assert info.value.retry_after == 3.0


@pytest.mark.parametrize("status", [500, 502, 503, 504, 520, 521, 522, 524])
def test_5xx_with_html_is_an_ambiguous_transport_error(status):
    html = b"<html><head><title>502 Bad Gateway</title></head><body>cloudflare</body></html>"
    with pytest.raises(TransportError) as info:
        parse_response(status, html)
    assert info.value.status == status
    assert info.value.ambiguous
    assert "cloudflare" in str(info.value)


def test_5xx_with_a_json_envelope_without_errors_is_still_transport_error():
    with pytest.raises(TransportError):
        parse_response(503, envelope(result={}))


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"   ",
        b'{"error": [], "resu',
        b"<html>oops</html>",
        b"[1, 2, 3]",
        b'"just a string"',
        b'{"something": "else"}',
        b"\xff\xfe\x00garbage",
        b"null",
    ],
)
def test_malformed_bodies_on_200_become_malformed_response(body):
    with pytest.raises(MalformedResponse) as info:
        parse_response(200, body)
    assert info.value.ambiguous
    assert info.value.transient


@pytest.mark.parametrize("status", [400, 403, 404, 405])
def test_other_4xx_with_html_is_invalid_request(status):
    with pytest.raises(InvalidRequest) as info:
        parse_response(status, b"<html>Forbidden</html>")
    assert info.value.status == status
    assert not info.value.transient


def test_4xx_with_envelope_and_no_error_is_invalid_request():
    with pytest.raises(InvalidRequest):
        parse_response(400, envelope(result={}))


def test_error_field_as_a_single_string_is_tolerated():
    with pytest.raises(InvalidNonce):
        parse_response(200, json.dumps({"error": "EAPI:Invalid nonce"}).encode())


def test_long_bodies_are_cut_in_messages():
    with pytest.raises(TransportError) as info:
        parse_response(502, b"x" * 10_000)
    assert len(str(info.value)) < 400


def test_to_dict_is_json_safe():
    with pytest.raises(PayRequestError) as info:
        parse_response(200, envelope(structured("EPay", "gone", "RequestNotFound")))
    data = info.value.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["error"] == "PayRequestError"
    assert data["reason"] == "not_found"


def test_public_names_of_the_error_module():
    for name in errors.__all__:
        assert hasattr(errors, name)
