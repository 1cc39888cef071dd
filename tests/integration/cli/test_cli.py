"""The ``kraken-pay`` command in fresh processes, as a user runs it: what it prints, its exit
status and its one-line errors; queued cancellations run by a real worker (threads pool, two
attempts per task at most) against the module's simulator.

What it reads (ids, durations, times), in this process: unit/cli/test_cli_parsing.py.
"""

from __future__ import annotations

import base64
import re
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import redis
from command_support import KRAKEN_PAY, kraken_pay, one_error_line
from tasks_support import REPO, unique, wait_for

from kraken.pay import Credentials, normalize_external_id
from kraken.pay.simulator import DEMO_API_KEY, DEMO_API_SECRET
from kraken_pay_cli.app import EXIT_UNREACHABLE

OTHER_SECRET = base64.b64encode(
    b"another key's secret, 64 bytes long, as Kraken's are....."
).decode()
NOT_BASE64 = "s3cr3t-value-that-is-not-base64!!"
NOWHERE = "redis://:hunter2@127.0.0.1:1/0"  # nothing listens on port 1
DEMO_KEY = {"KRAKEN_API_KEY": DEMO_API_KEY, "KRAKEN_API_SECRET": DEMO_API_SECRET}


def ids(count: int) -> list[str]:
    return [normalize_external_id(uuid.uuid4()) for _ in range(count)]


@pytest.fixture(scope="module")
def environment(environment: dict[str, str]) -> dict[str, str]:
    """Two attempts per task at most: a doomed cancellation fails quickly."""
    return environment | {"KRAKEN_RETRY_MAX_ATTEMPTS": "2"}


@pytest.fixture(scope="module")
def worker_options() -> dict[str, Any]:
    return {"pool": "threads", "concurrency": 2}


@pytest.fixture
def kraken_pay_queued(worker, queue: str, broker_url: str):
    """``queued(command, *args)``: ``kraken-pay <command> --queue <the worker's> *args``."""
    return lambda command, *args, **options: kraken_pay(
        command, "--queue", queue, *args, REDIS_URL=broker_url, **options
    )


# ----------------------------------------------------------------------------- usage


def test_help_documents_every_exit_status():
    completed = kraken_pay("--help")
    assert completed.returncode == 0
    for code in ("0", "1", "2", "3", "4", "130"):
        assert re.search(rf"^\s+{code}\s+\S", completed.stdout, re.MULTILINE), code


def test_an_unknown_command_is_one_line_and_status_2():
    completed = kraken_pay("cancle", "AAAAAAAAAAE")
    assert completed.returncode == 2
    assert one_error_line(completed).startswith("kraken-pay: No such command 'cancle'")


def test_a_missing_argument_names_the_command_and_its_help():
    completed = kraken_pay("cancel")
    assert completed.returncode == 2
    assert one_error_line(completed) == (
        "kraken-pay cancel: Missing argument 'ID...' (see 'kraken-pay cancel --help')"
    )


# ----------------------------------------------------------------------------- cancel


def test_an_unreachable_broker_is_status_4_at_once_without_the_password():
    started = time.monotonic()
    completed = kraken_pay("cancel", "AAAAAAAAAAE", REDIS_URL=NOWHERE)
    assert completed.returncode == 4
    line = one_error_line(completed)
    assert line.startswith("kraken-pay: broker: redis://:***@127.0.0.1:1/0 does not answer")
    assert "hunter2" not in completed.stdout + completed.stderr
    assert time.monotonic() - started < 10


def test_waiting_with_no_worker_gives_up_with_status_1(broker_url):
    completed = kraken_pay(
        "cancel", "--wait", "--timeout", "0.5", "--queue", unique("nobody"), "AAAAAAAAAAE",
        REDIS_URL=broker_url,
    )  # fmt: skip
    assert completed.returncode == 1
    assert completed.stdout.strip() == (
        "AAAAAAAAAAE  failed  TimeoutError: no outcome within 0.5s (is a worker running?)"
    )
    assert completed.stderr == ""


# ----------------------------------------------------------------------------- cancel, queued


def test_wait_prints_each_outcome_in_order_and_exits_0(sim, kraken_pay_queued):
    pending, paid, unknown = ids(3)
    sim.create_requests([pending])
    sim.create_requests([paid], "paid")

    completed = kraken_pay_queued("cancel", "--wait", pending, paid, unknown)

    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.splitlines() == [
        f"{pending}  cancelled  (attempts: 1)",
        f"{paid}  not_cancellable  (attempts: 1)",
        f"{unknown}  not_found  (attempts: 1)",
    ]


def test_without_wait_it_prints_the_task_ids_and_the_worker_cancels(sim, kraken_pay_queued):
    (eid,) = ids(1)
    sim.create_requests([eid])

    completed = kraken_pay_queued("cancel", eid)

    assert completed.returncode == 0, completed.stderr
    assert re.fullmatch(rf"{re.escape(eid)}  queued  task [0-9a-f-]{{36}}\n", completed.stdout)
    wait_for(lambda: sim.request(eid)["state"] == "cancelled", 20, "the cancellation")


def test_a_uuid_is_queued_in_its_canonical_form(sim, kraken_pay_queued):
    value = uuid.uuid4()
    sim.create_requests([value])

    completed = kraken_pay_queued("cancel", "--wait", str(value))

    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.startswith(f"{normalize_external_id(value)}  cancelled")


def test_a_cancellation_that_failed_exits_1_and_says_why(sim, kraken_pay_queued):
    (doomed,) = ids(1)
    sim.create_requests([doomed])
    sim.set_faults({"service_unavailable": {"next": 2}})  # both of its attempts
    try:
        completed = kraken_pay_queued("cancel", "--wait", doomed)
    finally:
        sim.clear_faults()

    assert completed.returncode == 1
    assert completed.stdout.startswith(f"{doomed}  failed  RetriesExhausted: ")
    assert "gave up after 2 attempt(s); last error: ServiceUnavailable" in completed.stdout
    assert completed.stderr == ""


# ----------------------------------------------------------------------------- --direct


def test_direct_cancels_from_this_process_and_prints_outcomes(sim, tasks_redis_url):
    pending, paid, unknown = ids(3)
    sim.create_requests([pending])
    sim.create_requests([paid], "paid")

    completed = kraken_pay(
        "cancel", "--direct", pending, paid, unknown,
        KRAKEN_API_URL=sim.url, REDIS_URL=tasks_redis_url, **DEMO_KEY,
    )  # fmt: skip

    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.splitlines() == [
        f"{pending}  cancelled  (attempts: 1)",
        f"{paid}  not_cancellable  (attempts: 1)",
        f"{unknown}  not_found  (attempts: 1)",
    ]
    assert sim.request(pending)["state"] == "cancelled"
    assert completed.stderr == ""


def test_direct_draws_nonces_from_the_workers_redis_sequence(sim, tasks_redis_url):
    tasks_db = redis.Redis.from_url(tasks_redis_url)
    key = f"kraken:nonce:{Credentials(DEMO_API_KEY, DEMO_API_SECRET).key_id}"
    before = int(tasks_db.get(key) or 0)

    completed = kraken_pay(
        "cancel", "--direct", *ids(1),
        KRAKEN_API_URL=sim.url, REDIS_URL=tasks_redis_url, **DEMO_KEY,
    )  # fmt: skip

    assert completed.returncode == 0, completed.stderr
    assert int(tasks_db.get(key)) > before


def test_direct_without_redis_uses_this_hosts_clock_and_says_so(sim):
    (eid,) = ids(1)
    sim.create_requests([eid])
    completed = kraken_pay(
        "cancel", "--direct", eid, KRAKEN_API_URL=sim.url, REDIS_URL=NOWHERE, **DEMO_KEY
    )
    assert completed.returncode == 0
    assert completed.stdout.startswith(f"{eid}  cancelled")
    assert one_error_line(completed) == (
        "kraken-pay: note: no Redis at redis://:***@127.0.0.1:1/0; nonces from this host's clock"
    )


@pytest.mark.parametrize(
    ("credentials", "message"),
    [
        ({"KRAKEN_API_SECRET": DEMO_API_SECRET}, "KRAKEN_API_KEY: is not set"),
        ({"KRAKEN_API_KEY": DEMO_API_KEY}, "KRAKEN_API_SECRET: is not set"),
        (
            {"KRAKEN_API_KEY": DEMO_API_KEY, "KRAKEN_API_SECRET": NOT_BASE64},
            "KRAKEN_API_SECRET: must be the base64 text",
        ),
        (
            {"KRAKEN_API_KEY": DEMO_API_KEY, "KRAKEN_API_SECRET": OTHER_SECRET},
            "AuthenticationError: EAPI:Invalid signature",
        ),
    ],
)
def test_direct_with_bad_credentials_is_status_3_and_never_shows_the_secret(
    sim, credentials, message
):
    completed = kraken_pay(
        "cancel", "--direct", "AAAAAAAAAAE", KRAKEN_API_URL=sim.url, REDIS_URL=NOWHERE,
        **credentials,
    )  # fmt: skip
    assert completed.returncode == 3
    line = completed.stderr.strip().splitlines()[-1]
    assert line.startswith("kraken-pay: ") and message in line
    assert "Traceback" not in completed.stderr
    for secret in (NOT_BASE64, OTHER_SECRET, DEMO_API_SECRET):
        assert secret not in completed.stdout + completed.stderr


def test_direct_with_the_api_unreachable_is_status_4():
    completed = kraken_pay(
        "cancel", "--direct", "AAAAAAAAAAE", REDIS_URL=NOWHERE, **DEMO_KEY
    )  # KRAKEN_API_URL: nothing listens
    assert completed.returncode == 4
    assert "TransportError: cannot connect to http://127.0.0.1:1" in completed.stderr
    assert "Traceback" not in completed.stderr


# ----------------------------------------------------------------------------- simulator


def test_the_simulator_command_serves_until_ctrl_c():
    proc = subprocess.Popen(
        [KRAKEN_PAY, "simulator", "--port", "0"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        url = line.rsplit(" ", 1)[-1].strip()
        assert line.startswith("Kraken Pay simulator listening on http://127.0.0.1:")
        with urllib.request.urlopen(f"{url}/_sim/stats", timeout=5) as response:
            assert response.status == 200
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 0
    finally:
        proc.kill()
        proc.wait()


def test_the_simulator_on_a_busy_port_is_one_line_as_python_m_kraken_pay_simulator(sim):
    completed = kraken_pay("simulator", "--port", str(sim.port))
    own = subprocess.run(
        [sys.executable, "-m", "kraken.pay.simulator", "--port", str(sim.port)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert completed.returncode == own.returncode == EXIT_UNREACHABLE
    busy = f"cannot listen on 127.0.0.1:{sim.port}"
    assert one_error_line(own).startswith(f"python -m kraken.pay.simulator: {busy}")
    assert one_error_line(completed) == one_error_line(own).replace(
        "python -m kraken.pay.simulator", "kraken-pay simulator"
    )


def test_the_simulator_command_is_the_simulators_own_help_included():
    completed = kraken_pay("simulator", "--help")
    assert completed.returncode == 0
    for option in ("--port", "--seed", "--nonce-window", "--latency", "--webhook"):
        assert option in completed.stdout


# ----------------------------------------------------------------------------- bulk-cancel


def test_bulk_cancel_shows_a_table_of_outcomes_and_reports_bad_lines(sim, kraken_pay_queued):
    pending = ids(5)
    paid = ids(2)
    sim.create_requests(pending)
    sim.create_requests(paid, "paid")
    lines = [*pending[:3], "not an id!", *pending[3:], *paid, pending[0]]
    completed = kraken_pay_queued("bulk-cancel", "-", stdin="\n".join(lines) + "\n")

    assert completed.returncode == 2, completed.stderr  # every id done, one line was bad
    assert completed.stderr.splitlines() == [
        "kraken-pay bulk-cancel: skipped line 4: 'not an id!': external_id: must be base64 "
        "(A-Z, a-z, 0-9, '+', '/') without padding"
    ]
    rows = dict(
        re.fullmatch(r"  (\S.*?)\s{2,}(\S.*)", line).groups()
        for line in completed.stdout.splitlines()
        if line.startswith("  ")
    )
    assert rows["cancelled"] == "5"
    assert rows["not cancellable"] == "2"
    assert rows["failed"] == "0"
    assert rows["ids"] == "8 (1 bad line(s), 1 duplicate(s))"
    assert all(sim.request(eid)["state"] == "cancelled" for eid in pending)


def test_bulk_cancel_reads_a_csv_column(sim, kraken_pay_queued, tmp_path):
    pending = ids(3)
    sim.create_requests(pending)
    orders = tmp_path / "orders.csv"
    orders.write_text("order,payment_id\n" + "".join(f"{n},{e}\n" for n, e in enumerate(pending)))
    completed = kraken_pay_queued("bulk-cancel", "--column", "payment_id", str(orders))
    assert completed.returncode == 0, completed.stderr
    assert all(sim.request(eid)["state"] == "cancelled" for eid in pending)


def test_bulk_cancel_of_a_file_without_ids_is_status_2(tmp_path):
    empty = tmp_path / "ids.txt"
    empty.write_text("# nothing yet\n\n")
    completed = kraken_pay("bulk-cancel", str(empty))
    assert completed.returncode == 2
    assert one_error_line(completed) == f"kraken-pay: no ids to cancel in {empty}"


def test_bulk_cancel_of_a_missing_file_is_status_2(tmp_path):
    completed = kraken_pay("bulk-cancel", str(tmp_path / "nope.txt"))
    assert completed.returncode == 2
    assert "No such file or directory" in one_error_line(completed)


# ----------------------------------------------------------------------------- schedules


def test_schedule_lists_and_unschedule(redis_url, redis_sync):
    (eid,) = ids(1)
    scheduled = kraken_pay("schedule", eid, "--in", "30m", REDIS_URL=redis_url)
    assert scheduled.returncode == 0, scheduled.stderr
    assert re.fullmatch(
        rf"{re.escape(eid)}  scheduled  \d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\dZ \(in (?:29m5\ds|30m)\)\n",
        scheduled.stdout,
    ), scheduled.stdout

    listing = kraken_pay("scheduled", REDIS_URL=redis_url)
    assert listing.returncode == 0
    assert listing.stdout.splitlines()[-1] == "1 scheduled"
    assert f"  {eid}  in " in listing.stdout

    assert kraken_pay("unschedule", eid, REDIS_URL=redis_url).stdout == f"{eid}  unscheduled\n"
    again = kraken_pay("unschedule", eid, REDIS_URL=redis_url)
    assert (again.returncode, again.stdout) == (1, f"{eid}  was not scheduled\n")
    assert kraken_pay("scheduled", REDIS_URL=redis_url).stdout == "nothing scheduled\n"


def test_schedule_at_a_time_with_a_zone(redis_url, redis_sync):
    (eid,) = ids(1)
    day = (datetime.now(timezone.utc) + timedelta(days=100)).date()  # within the 365-day horizon
    completed = kraken_pay("schedule", eid, "--at", f"{day}T12:00:00+01:00", REDIS_URL=redis_url)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.startswith(f"{eid}  scheduled  {day}T11:00:00Z (in ")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--in", "soon"], "'soon' is not a duration"),
        (["--at", "2030-01-01T12:00:00"], "has no time zone"),
        ([], "give exactly one of --in and --at"),
        (["--in", "5m", "--at", "2030-01-01T12:00:00Z"], "give exactly one of --in and --at"),
    ],
)
def test_schedule_refuses_bad_times_with_status_2(args, message):
    completed = kraken_pay("schedule", "AAAAAAAAAAE", *args, REDIS_URL=NOWHERE)
    assert completed.returncode == 2
    assert message in one_error_line(completed)


def test_scheduled_overdue_fails_a_health_check_when_beat_is_late(redis_url, redis_sync):
    (eid,) = ids(1)
    kraken_pay("schedule", eid, "--at", "2020-01-01T00:00:00Z", REDIS_URL=redis_url)
    late = kraken_pay("scheduled", "--overdue", "120", REDIS_URL=redis_url)
    assert late.returncode == 1
    assert late.stdout.splitlines()[-1] == "1 overdue by more than 120s: is beat running?"
    assert "overdue by " in late.stdout.splitlines()[0]


def test_schedule_with_redis_unreachable_is_status_4():
    completed = kraken_pay("schedule", "AAAAAAAAAAE", "--in", "5m", REDIS_URL=NOWHERE)
    assert completed.returncode == 4
    assert "hunter2" not in completed.stderr
    assert one_error_line(completed).startswith("kraken-pay: NotRecorded: ")
