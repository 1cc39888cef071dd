"""``kraken-pay bulk-cancel`` on hostile files: one line per bad line, bounded memory, no traceback.

Each test runs the console script as a user would, with ``--no-wait`` against a real Redis
broker and no worker: what the command publishes stays in its queue, where the test counts it.
The last runs the id reader alone over ten million lines, in a process of its own.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from command_support import KRAKEN_PAY, NO_API, clean_env
from tasks_support import REPO, unique

PREFIX = "kraken-pay bulk-cancel: skipped "
QUEUED = re.compile(r"(\d+) ids queued  task [0-9a-f-]{36}\n")


@pytest.fixture
def broker(broker_url: str) -> Iterator[tuple[str, redis.Redis]]:
    """The test broker's URL and a client of it, to count what the command published."""
    client = redis.Redis.from_url(broker_url)
    yield broker_url, client
    client.close()


@pytest.fixture
def empty_queue(broker: tuple[str, redis.Redis]) -> Iterator[str]:
    """A queue of this test alone, empty, deleted after."""
    name = unique("q-input")
    yield name
    broker[1].delete(name)


class Run:
    """One finished ``kraken-pay bulk-cancel --no-wait`` and its peak memory."""

    def __init__(self, returncode: int, stdout: str, stderr: str, peak_rss_kib: int) -> None:
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        self.peak_rss_kib = peak_rss_kib

    @property
    def errors(self) -> list[str]:
        assert "Traceback" not in self.stderr
        return self.stderr.splitlines()

    def queued(self) -> int:
        match = QUEUED.fullmatch(self.stdout)
        assert match, self.stdout
        return int(match.group(1))


def bulk_cancel(
    source: str | Path, *args: str, url: str, feed: Iterator[bytes] | None = None
) -> Run:
    """Run the command; ``feed`` writes its stdin from a thread. Peak RSS from wait4."""
    proc = subprocess.Popen(
        [KRAKEN_PAY, "bulk-cancel", "--no-wait", *args, str(source)],
        cwd=REPO,
        env=clean_env(KRAKEN_API_URL=NO_API, REDIS_URL=url),
        stdin=subprocess.PIPE if feed is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    writer = threading.Thread(target=_write, args=(proc, feed), daemon=True)
    writer.start()
    out: list[bytes] = []
    reader = threading.Thread(target=lambda: out.append(proc.stderr.read()), daemon=True)
    reader.start()
    stdout = proc.stdout.read()
    reader.join(120)
    writer.join(120)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return Run(proc.returncode, stdout.decode(), out[0].decode(), usage.ru_maxrss)


def _write(proc: subprocess.Popen, feed: Iterator[bytes] | None) -> None:
    if feed is None or proc.stdin is None:
        return
    try:
        for block in feed:
            proc.stdin.write(block)
        proc.stdin.close()
    except BrokenPipeError:  # the command stopped reading, as it may
        pass


def published(client: redis.Redis, queue: str) -> int:
    """Messages waiting in ``queue`` (kombu's Redis transport keeps a list per queue)."""
    return client.llen(queue)


# ----------------------------------------------------------------------------- files


def test_no_wait_publishes_and_ends_without_a_traceback(tmp_path, broker, empty_queue):
    url, client = broker
    ids = tmp_path / "ids.txt"
    ids.write_bytes(b"AAAAAAAAAAE\nAAAAAAAAAAI\n")
    run = bulk_cancel(ids, "--queue", empty_queue, url=url)
    assert run.returncode == 0
    assert run.errors == []
    assert run.queued() == 2
    assert published(client, empty_queue) == 1  # one chunk of two ids


def test_a_byte_that_is_not_utf8_costs_its_line_only(tmp_path, broker, empty_queue):
    url, client = broker
    ids = tmp_path / "ids.txt"
    ids.write_bytes(b"AAAAAAAAAAE\nAAAAAAAA\xe9AAE\nAAAAAAAAAAI\n")
    run = bulk_cancel(ids, "--queue", empty_queue, url=url)
    assert run.returncode == 2  # every id sent, one line was bad
    assert run.errors == [
        PREFIX + "line 2: 'AAAAAAAA\ufffdAAE': not UTF-8 (byte 0xe9 at position 9)"
    ]
    assert run.queued() == 2
    assert published(client, empty_queue) == 1


def test_a_byte_order_mark_does_not_break_column_by_name(tmp_path, broker, empty_queue):
    url, client = broker
    orders = tmp_path / "orders.csv"
    orders.write_bytes(b"\xef\xbb\xbfpayment_id,order\r\nAAAAAAAAAAE,17\r\nAAAAAAAAAAI,18\r\n")
    run = bulk_cancel(orders, "--queue", empty_queue, "--column", "payment_id", url=url)
    assert run.returncode == 0
    assert run.errors == []
    assert run.queued() == 2
    assert published(client, empty_queue) == 1


def test_a_10_mb_bad_line_is_shown_as_an_excerpt(tmp_path, broker, empty_queue):
    url, client = broker
    ids = tmp_path / "ids.txt"
    ids.write_bytes(b"AAAAAAAAAAE\n" + b"y" * 10_000_000 + b"\nAAAAAAAAAAI\n")
    run = bulk_cancel(ids, "--queue", empty_queue, url=url)
    assert run.returncode == 2
    shown = repr("y" * 80)[:77] + "..."
    assert run.errors == [PREFIX + f"line 2: {shown}: longer than 1024 bytes (10,000,001 bytes)"]
    assert run.queued() == 2
    assert published(client, empty_queue) == 1


def test_a_csv_cell_over_131072_characters_costs_its_line_only(tmp_path, broker, empty_queue):
    url, client = broker
    orders = tmp_path / "orders.csv"
    cell = b'"' + b"A" * 131_073 + b'"'
    orders.write_bytes(b"order,payment_id\n1," + cell + b"\n2,AAAAAAAAAAE\n")
    run = bulk_cancel(orders, "--queue", empty_queue, "--column", "payment_id", url=url)
    assert run.returncode == 2
    (error,) = run.errors
    assert error.startswith(PREFIX + "line 2: '1,\"AAAAA")
    assert error.endswith("...: longer than 1024 bytes (131,078 bytes)")
    assert run.queued() == 1
    assert published(client, empty_queue) == 1


def test_the_first_100_bad_lines_are_shown_then_a_count(tmp_path, broker, empty_queue):
    url, client = broker
    ids = tmp_path / "ids.txt"
    ids.write_bytes(b"bad!\n" * 1000 + b"AAAAAAAAAAE\n")
    run = bulk_cancel(ids, "--queue", empty_queue, url=url)
    assert run.returncode == 2
    assert len(run.errors) == 101
    assert run.errors[99].startswith(PREFIX + "line 100: 'bad!': external_id: ")
    assert run.errors[100] == PREFIX + "900 more bad line(s)"
    assert run.queued() == 1
    assert published(client, empty_queue) == 1


def test_dev_zero_is_refused_in_bounded_memory(tmp_path, broker, empty_queue):
    url, client = broker
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    baseline = bulk_cancel(empty, "--queue", empty_queue, url=url)
    assert baseline.errors == [f"kraken-pay: no ids to cancel in {empty}"]

    run = bulk_cancel("/dev/zero", "--queue", empty_queue, url=url)

    assert run.returncode == 2
    assert run.errors == [
        PREFIX + "line 1: " + repr("\x00" * 19)[:77] + "...: longer than 1024 bytes "
        "(more than 1,073,741,825 bytes)",
        "kraken-pay: /dev/zero: larger than 1,073,741,824 bytes: split it into smaller files",
    ]
    assert run.stdout == ""
    assert published(client, empty_queue) == 0  # a file refused as a whole sends nothing
    assert run.peak_rss_kib - baseline.peak_rss_kib < 16 * 1024


def test_ten_million_lines_on_stdin_are_read_in_bounded_memory(tmp_path, broker, empty_queue):
    url, client = broker
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    baseline = bulk_cancel(empty, "--queue", empty_queue, url=url)
    block = (b"AAAAAAAAAAE\n" + b"not an id\n" + b"# comment\n" * 498 + b"\n" * 500) * 10
    lines = (block for _ in range(1000))  # 1,000 blocks of 10,000 lines

    run = bulk_cancel("-", "--queue", empty_queue, url=url, feed=lines)

    assert run.returncode == 2
    assert len(run.errors) == 101
    assert run.errors[-1] == PREFIX + "9,900 more bad line(s)"
    assert run.queued() == 10_000  # one id, 9,999 times: cancelled once, by the chunks
    assert published(client, empty_queue) == 10  # chunks of 1,000
    assert run.peak_rss_kib - baseline.peak_rss_kib < 32 * 1024


def test_more_ids_than_max_ids_sends_nothing(tmp_path, broker, empty_queue):
    url, client = broker
    ids = tmp_path / "ids.txt"
    ids.write_bytes(b"AAAAAAAAAAE\nAAAAAAAAAAI\nAAAAAAAAAAM\n")
    run = bulk_cancel(ids, "--queue", empty_queue, "--max-ids", "2", url=url)
    assert run.returncode == 2
    assert run.errors == [f"kraken-pay: {ids}: more than 2 ids: split it, or raise --max-ids"]
    assert published(client, empty_queue) == 0


def test_utf16_is_refused_in_one_line(tmp_path, broker, empty_queue):
    url, client = broker
    ids = tmp_path / "ids.txt"
    ids.write_bytes("AAAAAAAAAAE\n".encode("utf-16"))
    run = bulk_cancel(ids, "--queue", empty_queue, url=url)
    assert run.returncode == 2
    assert run.errors == [
        f"kraken-pay: {ids}: UTF-16 text (a UTF-16 byte order mark): save it as UTF-8"
    ]
    assert published(client, empty_queue) == 0


# ----------------------------------------------------------------------------- the reader alone

# A reader over 10 million generated lines in a process of its own: its peak RSS, less the
# peak of the same process over no lines, is what reading costs.
_TEN_MILLION = textwrap.dedent(
    """
    import io, sys
    from kraken_pay_cli.idfile import Problems, iter_ids

    BLOCK = (b"AAAAAAAAAAE\\n" + b"not an id!\\n" + b"# comment\\n" * 48 + b"\\n" * 50) * 100

    class Lines(io.RawIOBase):  # 10,000 lines a block, as many blocks as asked
        def __init__(self, blocks):
            self.blocks, self.rest = blocks, b""
        def readable(self):
            return True
        def readinto(self, buffer):
            if not self.rest and self.blocks:
                self.blocks, self.rest = self.blocks - 1, BLOCK
            n = min(len(buffer), len(self.rest))
            buffer[:n], self.rest = self.rest[:n], self.rest[n:]
            return n

    problems = Problems()
    count = sum(1 for _ in iter_ids(io.BufferedReader(Lines(int(sys.argv[1]))), problems=problems))
    print(count, problems.count, len(problems.reports))
    """
)


def _peak_rss_kib(*args: str) -> tuple[str, int]:
    proc = subprocess.Popen(
        [sys.executable, "-c", _TEN_MILLION, *args], stdout=subprocess.PIPE, text=True
    )
    out = proc.stdout.read() if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    return out, usage.ru_maxrss


def test_ten_million_lines_are_read_in_constant_memory():
    _, baseline = _peak_rss_kib("0")
    out, peak = _peak_rss_kib("1000")  # 1,000 blocks of 10,000 lines
    assert out.split() == ["100000", "100000", "100"]
    assert peak - baseline < 16 * 1024, (baseline, peak)  # KiB
