"""external_id: every accepted form maps to one canonical string; every bad one names the rule."""

from __future__ import annotations

import base64
import uuid

import pytest

from kraken.pay import InvalidExternalId, normalize_external_id


def test_uuid_becomes_its_16_bytes_unpadded():
    value = uuid.UUID("12345678-1234-5678-1234-567812345678")
    expected = base64.b64encode(value.bytes).decode().rstrip("=")
    assert normalize_external_id(value) == expected
    assert len(expected) == 22


def test_int_becomes_8_big_endian_bytes():
    assert normalize_external_id(1) == base64.b64encode((1).to_bytes(8, "big")).decode().rstrip("=")
    assert normalize_external_id(2**64 - 1) == "//////////8"
    assert normalize_external_id(0) == "AAAAAAAAAAA"


@pytest.mark.parametrize("raw", [b"\x00", b"a", b"ab", b"abc", b"x" * 16])
def test_bytes_round_trip(raw):
    text = normalize_external_id(raw)
    assert "=" not in text
    assert base64.b64decode(text + "=" * (-len(text) % 4)) == raw


@pytest.mark.parametrize("text", ["YQ", "YWI", "YWJj", "AAAAAAAAAAE", "ab+/AA"])
def test_canonical_string_is_returned_unchanged(text):
    assert normalize_external_id(text) == text


def test_normalizing_is_idempotent():
    value = normalize_external_id(uuid.uuid4())
    assert normalize_external_id(normalize_external_id(value)) == value


@pytest.mark.parametrize(
    ("value", "rule"),
    [
        ("", "must not be empty"),
        (b"", "1 to 16 bytes, got 0"),
        (b"x" * 17, "1 to 16 bytes, got 17"),
        ("eHh4eHh4eHh4eHh4eHh4eHg", "1 to 16 bytes, got 17"),
        ("YQ==", "without padding"),
        ("YWI=", "without padding"),
        ("ab-_", "must be base64"),
        ("a b", "must be base64"),
        ("abcde", "length of 5"),
        ("YR", "not canonical"),
        (-1, "64 bits"),
        (2**64, "64 bits"),
        (True, "not bool"),
        (1.5, "not float"),
        (None, "not NoneType"),
    ],
)
def test_invalid_values_name_the_field_and_the_rule(value, rule):
    with pytest.raises(InvalidExternalId) as info:
        normalize_external_id(value)
    message = str(info.value)
    assert message.startswith("external_id: ")
    assert rule in message


def test_invalid_external_id_is_a_value_error():
    assert issubclass(InvalidExternalId, ValueError)
