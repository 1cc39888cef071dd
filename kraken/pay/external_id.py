"""Kraken Pay ``external_id``: 1 to 16 bytes, sent as base64 without padding.

Every accepted input maps to one canonical string, so the id a user stores is the id
Kraken sees, and two spellings of the same bytes can never become two payment requests.
"""

from __future__ import annotations

import base64
import binascii
import re
import uuid

__all__ = ["MAX_BYTES", "InvalidExternalId", "normalize_external_id"]

MAX_BYTES = 16
_UINT64_MAX = 2**64 - 1
_BASE64_CHARS = re.compile(r"[A-Za-z0-9+/]+")


class InvalidExternalId(ValueError):
    """The value cannot be a Kraken Pay ``external_id``; the message names the rule."""

    def __init__(self, rule: str) -> None:
        super().__init__(f"external_id: {rule}")
        self.rule = rule


def _encode(raw: bytes) -> str:
    if not raw:
        raise InvalidExternalId("must be 1 to 16 bytes, got 0")
    if len(raw) > MAX_BYTES:
        raise InvalidExternalId(f"must be 1 to 16 bytes, got {len(raw)}")
    return base64.b64encode(raw).decode("ascii").rstrip("=")


def _decode(text: str) -> bytes:
    if not text:
        raise InvalidExternalId("must not be empty")
    if "=" in text:
        raise InvalidExternalId("must be base64 without padding ('=' is not allowed)")
    if not _BASE64_CHARS.fullmatch(text):
        raise InvalidExternalId("must be base64 (A-Z, a-z, 0-9, '+', '/') without padding")
    if len(text) % 4 == 1:
        raise InvalidExternalId(f"is not valid base64: a length of {len(text)} cannot decode")
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except binascii.Error:  # pragma: no cover - the checks above leave nothing for this
        raise InvalidExternalId("is not valid base64") from None


def normalize_external_id(value: uuid.UUID | int | bytes | str) -> str:
    """Return the canonical ``external_id`` for a UUID, a 64-bit int, raw bytes or a string.

    A UUID becomes its 16 bytes, an int its 8 big-endian bytes; a string must already be
    canonical base64 without padding.
    """
    if isinstance(value, uuid.UUID):
        return _encode(value.bytes)
    if isinstance(value, bool):
        raise InvalidExternalId("must be a UUID, a 64-bit int, bytes or a base64 string, not bool")
    if isinstance(value, int):
        if not 0 <= value <= _UINT64_MAX:
            raise InvalidExternalId("an int must fit in 64 bits unsigned (0 to 2**64 - 1)")
        return _encode(value.to_bytes(8, "big"))
    if isinstance(value, (bytes, bytearray, memoryview)):
        return _encode(bytes(value))
    if isinstance(value, str):
        raw = _decode(value)
        canonical = _encode(raw)
        if canonical != value:
            raise InvalidExternalId(
                f"is not canonical base64: its unused trailing bits are set ({canonical!r} "
                "encodes the same bytes)"
            )
        return canonical
    raise InvalidExternalId(
        f"must be a UUID, a 64-bit int, bytes or a base64 string, not {type(value).__name__}"
    )
