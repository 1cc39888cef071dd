"""A file of external ids, read as a stream: bounded memory whatever the file holds.

The file comes from outside (an export, a pipe, a mistyped path such as ``/dev/zero``), so
nothing in it is trusted: a line is at most :data:`MAX_LINE` bytes (a longer one is an
error for that line, read past in pieces, never held whole), each line is decoded on its
own (a byte that is not UTF-8 spoils its line, not the file), a UTF-8 byte order mark is
ignored, and only the first :data:`MAX_REPORTED` bad lines are kept, with an excerpt of at
most :data:`EXCERPT` characters; the rest are counted. The whole input is bounded too
(:data:`MAX_BYTES`, and ``max_ids`` ids), so that what the caller keeps stays small.
"""

from __future__ import annotations

import codecs
import csv
import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from kraken.pay import normalize_external_id

__all__ = [
    "EXCERPT",
    "MAX_BYTES",
    "MAX_IDS",
    "MAX_LINE",
    "MAX_REPORTED",
    "InputError",
    "Problems",
    "excerpt",
    "iter_ids",
    "read_ids",
]

MAX_LINE = 1024  # bytes in one line, its line break included
MAX_BYTES = 1 << 30  # bytes read in all: a file larger than this is refused, not half-sent
MAX_IDS = 1_000_000  # ids one run collects before the file is refused as too large
MAX_REPORTED = 100  # bad lines kept in full; the rest are counted
EXCERPT = 80  # characters of a bad line shown, quotes included

_SKIP_PIECE = 64 * 1024  # bytes read at a time past the end of a line that is too long
_UTF16_BOMS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)


class InputError(ValueError):
    """The input as a whole cannot be used (too large, UTF-16, no such column)."""


@dataclass
class Problems:
    """The bad lines: the first ``keep`` as one-line reports, all of them counted."""

    keep: int = MAX_REPORTED
    reports: list[str] = field(default_factory=list)
    count: int = 0

    def add(self, number: int, what: str, reason: str) -> None:
        self.count += 1
        if len(self.reports) < self.keep:
            self.reports.append(f"line {number}: {what}: {reason}")

    @property
    def unreported(self) -> int:
        return self.count - len(self.reports)

    def __bool__(self) -> bool:
        return self.count > 0


def excerpt(text: str, limit: int = EXCERPT) -> str:
    """``repr(text)``, cut to ``limit`` characters with ``...`` where it was cut."""
    shown = repr(text[:limit])  # never repr a long line whole
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."


def _lines(
    stream: BinaryIO, problems: Problems, max_line: int, max_bytes: int
) -> Iterator[tuple[int, str | None]]:
    """``(number, text)`` per line; ``text`` is ``None`` for a bad line, already reported."""
    total = 0
    for number in itertools.count(1):
        raw = stream.readline(max_line + 1)
        if not raw:
            return
        total += len(raw)
        if number == 1:
            if raw.startswith(_UTF16_BOMS):
                raise InputError("UTF-16 text (a UTF-16 byte order mark): save it as UTF-8")
            raw = raw.removeprefix(codecs.BOM_UTF8)
        if len(raw) > max_line:  # no line break within the limit: skip the rest unread
            skipped, ended = _skip_line(stream, max_bytes - total)
            total += skipped
            size = f"{'' if ended else 'more than '}{len(raw) + skipped:,} bytes"
            problems.add(number, _shown(raw), f"longer than {max_line} bytes ({size})")
            yield number, None
        else:
            yield number, _decode(number, raw, problems)
        if total > max_bytes:
            raise InputError(f"larger than {max_bytes:,} bytes: split it into smaller files")


def _skip_line(stream: BinaryIO, budget: int) -> tuple[int, bool]:
    """Read past the rest of a line, piece by piece, up to ``budget`` bytes.

    Returns the bytes read and whether the line ended within them.
    """
    skipped = 0
    while skipped <= budget:
        piece = stream.readline(min(_SKIP_PIECE, budget + 1 - skipped))
        skipped += len(piece)
        if not piece or piece.endswith(b"\n"):
            return skipped, True
    return skipped, False


def _shown(raw: bytes) -> str:
    return excerpt(raw[: EXCERPT * 4].rstrip(b"\r\n").decode("utf-8", "replace"))


def _decode(number: int, raw: bytes, problems: Problems) -> str | None:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        where = f"byte 0x{raw[exc.start]:02x} at position {exc.start + 1}"
        problems.add(number, _shown(raw), f"not UTF-8 ({where})")
        return None


def _plain_cells(lines: Iterator[tuple[int, str | None]]) -> Iterator[tuple[int, str]]:
    for number, line in lines:
        text = line.strip() if line is not None else ""
        if text and not text.startswith("#"):
            yield number, text


def _csv_cells(
    lines: Iterator[tuple[int, str | None]], column: str, problems: Problems
) -> Iterator[tuple[int, str]]:
    """The cells of ``column``; each CSV record is one line (an id never spans lines)."""
    index = _column_number(column)
    for number, line in lines:
        if line is not None and not line.strip():
            continue
        row = None if line is None else _csv_row(number, line, problems)
        if row is None:
            if index is None:  # the header must be readable: it says where the ids are
                raise InputError(f"line {number}: the header is unreadable (see above)")
            continue
        if index is None:  # the first line is the header: it names the column
            index = _header_index(row, column)
        elif index < len(row):
            yield number, row[index].strip()
        else:
            problems.add(number, excerpt(line.rstrip("\r\n")), f"has no column {column}")


def _csv_row(number: int, line: str, problems: Problems) -> list[str] | None:
    try:
        return next(csv.reader((line,), strict=True))
    except csv.Error as exc:
        problems.add(number, excerpt(line.rstrip("\r\n")), f"not CSV ({exc})")
        return None


def _column_number(column: str) -> int | None:
    """The 0-based index of a numbered column, ``None`` when a header must name it."""
    if not column.isdigit():
        return None
    if int(column) < 1:
        raise InputError(f"--column: numbers start at 1, not {column}")
    return int(column) - 1


def _header_index(row: list[str], column: str) -> int:
    names = [cell.strip() for cell in row]
    if column not in names:
        shown = excerpt(",".join(names))
        raise InputError(f"no column {column!r} in the header {shown}")
    return names.index(column)


def iter_ids(
    stream: BinaryIO,
    column: str | None = None,
    *,
    problems: Problems,
    parse: Callable[[str], str] = normalize_external_id,
    max_line: int = MAX_LINE,
    max_bytes: int = MAX_BYTES,
) -> Iterator[tuple[int, str]]:
    """``(line number, parse(cell))`` for each good line of ``stream`` (opened in binary).

    One id a line, or CSV when ``column`` (a header's name, or a number from 1) is given.
    Blank lines, and lines starting with ``#`` outside CSV, are skipped; bad lines go to
    ``problems`` and the rest is read on; ``parse`` says what an id is (a ``ValueError``
    makes the line bad). :class:`InputError` when the input as a whole cannot be used.
    """
    lines = _lines(stream, problems, max_line, max_bytes)
    cells = _csv_cells(lines, column, problems) if column else _plain_cells(lines)
    for number, text in cells:
        try:
            yield number, parse(text)
        except ValueError as exc:
            problems.add(number, excerpt(text), str(exc))


def read_ids(
    stream: BinaryIO,
    column: str | None = None,
    *,
    problems: Problems,
    max_ids: int = MAX_IDS,
    **options: Any,
) -> list[str]:
    """Every id of ``stream``, in order; more than ``max_ids`` is an :class:`InputError`."""
    ids: list[str] = []
    for _, eid in iter_ids(stream, column, problems=problems, **options):
        if len(ids) == max_ids:
            raise InputError(f"more than {max_ids:,} ids: split it, or raise --max-ids")
        ids.append(eid)
    return ids
