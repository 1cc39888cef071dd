"""Reading a file of ids as a stream: hostile input costs a line each, never the file or memory."""

from __future__ import annotations

import io
import tracemalloc

import pytest

from kraken_pay_cli import cli, idfile
from kraken_pay_cli.idfile import InputError, Problems


def read(data: bytes, column: str | None = None, **options) -> tuple[list[str], Problems]:
    problems = Problems()
    ids = idfile.read_ids(
        io.BytesIO(data), column, problems=problems, parse=cli.parse_id, **options
    )
    return ids, problems


# ----------------------------------------------------------------------------- lines


def test_ids_are_read_one_a_line_skipping_blanks_and_comments():
    ids, problems = read(b"# orders to cancel\nAAAAAAAAAAE\n\n  AAAAAAAAAAI  \r\n")
    assert ids == ["AAAAAAAAAAE", "AAAAAAAAAAI"]
    assert not problems


def test_a_bad_line_is_reported_with_its_number_and_the_rest_is_read():
    ids, problems = read(b"AAAAAAAAAAE\nnot an id!\n00000000-0000-0000-0000-000000000001\n")
    assert ids == ["AAAAAAAAAAE", "AAAAAAAAAAAAAAAAAAAAAQ"]
    assert problems.reports == [
        "line 2: 'not an id!': external_id: must be base64 (A-Z, a-z, 0-9, '+', '/') "
        "without padding"
    ]


def test_a_byte_that_is_not_utf8_spoils_its_line_only():
    ids, problems = read(b"AAAAAAAAAAE\nAAAA\xffAAAAAAE\nAAAAAAAAAAI\n")
    assert ids == ["AAAAAAAAAAE", "AAAAAAAAAAI"]
    assert problems.reports == ["line 2: 'AAAA\ufffdAAAAAAE': not UTF-8 (byte 0xff at position 5)"]


def test_a_utf8_byte_order_mark_is_ignored():
    ids, problems = read(b"\xef\xbb\xbfAAAAAAAAAAE\nAAAAAAAAAAI\n")
    assert ids == ["AAAAAAAAAAE", "AAAAAAAAAAI"]
    assert not problems


def test_utf16_is_refused_as_a_whole_with_what_to_do():
    with pytest.raises(InputError, match=r"^UTF-16 text .*: save it as UTF-8$"):
        read("AAAAAAAAAAE\n".encode("utf-16"))


def test_a_long_line_is_an_error_for_that_line_with_an_80_character_excerpt():
    ten_mb = b"x" * 10_000_000
    ids, problems = read(b"AAAAAAAAAAE\n" + ten_mb + b"\nAAAAAAAAAAI\n")
    assert ids == ["AAAAAAAAAAE", "AAAAAAAAAAI"]
    (report,) = problems.reports
    shown, reason = report.removeprefix("line 2: ").split(": ")
    assert shown == repr("x" * 76)[:77] + "..."
    assert len(shown) == idfile.EXCERPT
    assert reason == "longer than 1024 bytes (10,000,001 bytes)"


def test_a_long_line_is_read_past_without_being_held():
    stream = io.BytesIO(b"x" * 50_000_000 + b"\nAAAAAAAAAAE\n")
    problems = Problems()
    tracemalloc.start()
    try:
        ids = list(idfile.iter_ids(stream, problems=problems))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert ids == [(2, "AAAAAAAAAAE")]
    assert problems.count == 1
    assert peak < 512 * 1024  # a 64 KiB piece at a time, not 50 MB


def test_a_line_of_exactly_the_limit_is_read():
    line = b"#" + b"-" * (idfile.MAX_LINE - 2) + b"\n"  # 1024 bytes with its line break
    ids, problems = read(line + b"AAAAAAAAAAE\n")
    assert ids == ["AAAAAAAAAAE"]
    assert not problems


def test_only_the_first_100_bad_lines_are_kept_the_rest_counted():
    ids, problems = read(b"bad!\n" * 250 + b"AAAAAAAAAAE\n")
    assert ids == ["AAAAAAAAAAE"]
    assert len(problems.reports) == 100
    assert problems.reports[-1].startswith("line 100: 'bad!': ")
    assert (problems.count, problems.unreported) == (250, 150)


def test_excerpts_never_exceed_80_characters():
    for text in ["", "a" * 79, "a" * 200, "\x00" * 200, "é" * 300]:
        assert len(idfile.excerpt(text)) <= 80


# ----------------------------------------------------------------------------- bounds


def test_more_ids_than_max_ids_refuses_the_file():
    with pytest.raises(InputError, match=r"^more than 2 ids: split it, or raise --max-ids$"):
        read(b"AAAAAAAAAAE\nAAAAAAAAAAI\nAAAAAAAAAAM\n", max_ids=2)


def test_dev_zero_is_refused_at_the_byte_cap_in_bounded_memory():
    problems = Problems()
    tracemalloc.start()
    try:
        with open("/dev/zero", "rb") as zeros, pytest.raises(InputError, match="larger than"):
            list(idfile.iter_ids(zeros, problems=problems, max_bytes=64 << 20))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert problems.reports == [
        "line 1: " + idfile.excerpt("\x00" * 80) + ": longer than 1024 bytes "
        f"(more than {(64 << 20) + 1:,} bytes)"
    ]
    assert peak < 512 * 1024


# ----------------------------------------------------------------------------- CSV


def test_csv_ids_come_from_the_column_the_header_names():
    ids, problems = read(
        b"order,payment_id\n17,AAAAAAAAAAE\n18,bad!\n19,AAAAAAAAAAI\n", "payment_id"
    )
    assert ids == ["AAAAAAAAAAE", "AAAAAAAAAAI"]
    assert [p.split(":")[0] for p in problems.reports] == ["line 3"]


def test_a_byte_order_mark_does_not_hide_the_first_column_name():
    ids, problems = read(b"\xef\xbb\xbfpayment_id,order\nAAAAAAAAAAE,17\n", "payment_id")
    assert ids == ["AAAAAAAAAAE"]
    assert not problems


def test_csv_ids_come_from_a_numbered_column_without_a_header():
    ids, problems = read(b"17,AAAAAAAAAAE\n18\n19,AAAAAAAAAAI\n", "2")
    assert ids == ["AAAAAAAAAAE", "AAAAAAAAAAI"]
    assert problems.reports == ["line 2: '18': has no column 2"]


def test_a_column_the_header_lacks_is_refused():
    with pytest.raises(InputError, match=r"^no column 'payment_id' in the header 'order,id'$"):
        read(b"order,id\n1,AAAAAAAAAAE\n", "payment_id")


def test_column_numbers_start_at_1():
    with pytest.raises(InputError, match=r"^--column: numbers start at 1, not 0$"):
        read(b"AAAAAAAAAAE\n", "0")


def test_a_csv_cell_over_the_csv_field_limit_costs_its_line_only():
    huge = b'"' + b"A" * 200_000 + b'"'  # csv's own limit is 131,072 characters
    ids, problems = read(b"n,id\n1," + huge + b"\n2,AAAAAAAAAAE\n", "id")
    assert ids == ["AAAAAAAAAAE"]
    assert problems.reports[0].startswith("line 2: '1,\"AAAA")
    assert problems.reports[0].endswith(": longer than 1024 bytes (200,005 bytes)")


def test_a_quoted_cell_spanning_lines_is_an_error_for_its_lines():
    ids, problems = read(b'n,id\n1,"AAAAAAAAAAE\n",x\n2,AAAAAAAAAAI\n', "id")
    assert ids == ["AAAAAAAAAAI"]
    assert [p.split(": ")[0] for p in problems.reports] == ["line 2", "line 3"]
    assert problems.reports[0].endswith("not CSV (unexpected end of data)")


def test_an_unreadable_header_refuses_the_file():
    problems = Problems()
    with pytest.raises(InputError, match=r"^line 1: the header is unreadable \(see above\)$"):
        idfile.read_ids(io.BytesIO(b"\xffid\nAAAAAAAAAAE\n"), "id", problems=problems)
    assert problems.reports[0].startswith("line 1: ")


def test_a_header_that_is_not_csv_refuses_the_file():
    problems = Problems()
    with pytest.raises(InputError, match=r"^line 2: the header is unreadable \(see above\)$"):
        idfile.read_ids(io.BytesIO(b'\nid,"x\nAAAAAAAAAAE,1\n'), "id", problems=problems)
    assert problems.reports == ["line 2: 'id,\"x': not CSV (unexpected end of data)"]
