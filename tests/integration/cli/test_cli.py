"""The ``kraken-pay`` command: what it prints, its exit status, and its one-line errors."""

from __future__ import annotations

import base64
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import redis
from click.testing import CliRunner
from tasks_support import (
    BROKER_DB,
    RABBITMQ_URL,
    REPO,
    TASKS_DB,
    Worker,
    client_app,
    redis_db,
    unique,
    wait_for,
    worker_env,
    workers,
)

from kraken.pay import Credentials, normalize_external_id
from kraken.pay.simulator import DEMO_API_KEY, DEMO_API_SECRET, SimulatorThread
from tasks import cli, standalone
from tasks.celery import app

KRAKEN_PAY = str(Path(sys.executable).with_name("kraken-pay"))
OTHER_SECRET = base64.b64encode(
    b"another key's secret, 64 bytes long, as Kraken's are....."
).decode()
NOT_BASE64 = "s3cr3t-value-that-is-not-base64!!"
NOWHERE = "redis://:hunter2@127.0.0.1:1/0"  # nothing listens on port 1


def clean_env(**variables: str) -> dict[str, str]:
    """This process's environment without any Kraken, Celery or Redis setting, plus these."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("KRAKEN_", "CELERY_")) and name != "REDIS_URL"
    }
    return env | {"KRAKEN_API_URL": "http://127.0.0.1:1"} | variables


def kraken_pay(*args: str, timeout: float = 60, **env: str) -> subprocess.CompletedProcess[str]:
    """Run the console script as a user would."""
    return subprocess.run(
        [KRAKEN_PAY, *args],
        cwd=REPO,
        env=clean_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def one_error_line(completed: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in completed.stderr
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1, completed.stderr
    return lines[0]


def ids(count: int) -> list[str]:
    return [normalize_external_id(uuid.uuid4()) for _ in range(count)]


@pytest.fixture
def sim() -> Iterator[SimulatorThread]:
    with SimulatorThread() as simulator:
        yield simulator


@pytest.fixture
def demo_key() -> dict[str, str]:
    return {"KRAKEN_API_KEY": DEMO_API_KEY, "KRAKEN_API_SECRET": DEMO_API_SECRET}


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


def test_a_malformed_id_is_refused_before_anything_is_queued(monkeypatch):
    sent = []
    monkeypatch.setattr(app, "send_task", lambda *a, **kw: sent.append(a))
    result = CliRunner().invoke(cli.cli, ["cancel", "AAAAAAAAAAE", "not base64!"])
    assert result.exit_code == 2
    assert "'not base64!': external_id: must be base64" in result.stderr
    assert sent == []


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("AAAAAAAAAAE", "AAAAAAAAAAE"),
        ("00000000-0000-0000-0000-000000000001", "AAAAAAAAAAAAAAAAAAAAAQ"),
        (" AAAAAAAAAAE ", "AAAAAAAAAAE"),
    ],
)
def test_an_id_is_canonical_base64_or_a_uuid(text, canonical):
    assert cli.parse_id(text) == canonical


def test_digits_are_base64_not_an_integer():
    assert cli.parse_id("1234") == "1234"


def test_passwords_in_urls_are_never_shown():
    assert cli.redact("cannot reach redis://:hunter2@h:6379/0 or amqp://u:p@r//") == (
        "cannot reach redis://:***@h:6379/0 or amqp://u:***@r//"
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


def test_waiting_with_no_worker_gives_up_with_status_1(redis_url):
    broker = redis_db(redis_url, BROKER_DB)
    completed = kraken_pay(
        "cancel", "--wait", "--timeout", "0.5", "--queue", unique("nobody"), "AAAAAAAAAAE",
        REDIS_URL=broker,
    )  # fmt: skip
    assert completed.returncode == 1
    assert completed.stdout.strip() == (
        "AAAAAAAAAAE  failed  TimeoutError: no outcome within 0.5s (is a worker running?)"
    )
    assert completed.stderr == ""


@pytest.fixture(scope="module")
def worker_setup(redis_url: str, tmp_path_factory) -> Iterator[tuple[SimulatorThread, str]]:
    """A simulator and a worker on a queue of its own; two attempts per task at most."""
    broker = redis_db(redis_url, BROKER_DB)
    queue = unique("q-cli")
    with SimulatorThread() as sim:
        env = worker_env(
            sim_url=sim.url,
            redis_url=redis_db(redis_url, TASKS_DB),
            broker_url=broker,
            KRAKEN_RETRY_MAX_ATTEMPTS="2",
        )
        node = Worker(env, queue, tmp_path_factory.mktemp("cli"), pool="threads")
        with workers(node), client_app(app, broker_url=broker, result_backend=broker) as c:
            node.wait_ready(c)
            yield sim, queue


class TestWithAWorker:
    """Queued cancellations, run by a real worker against the simulator."""

    @pytest.fixture
    def setup(self, worker_setup):
        return worker_setup

    def cancel(self, setup, redis_url, *args: str) -> subprocess.CompletedProcess[str]:
        _, queue = setup
        broker = redis_db(redis_url, BROKER_DB)
        return kraken_pay("cancel", "--queue", queue, *args, REDIS_URL=broker)

    def test_wait_prints_each_outcome_in_order_and_exits_0(self, setup, redis_url):
        sim, _ = setup
        pending, paid, unknown = ids(3)
        sim.create_requests([pending])
        sim.create_requests([paid], "paid")

        completed = self.cancel(setup, redis_url, "--wait", pending, paid, unknown)

        assert completed.returncode == 0, completed.stderr
        assert completed.stdout.splitlines() == [
            f"{pending}  cancelled  (attempts: 1)",
            f"{paid}  not_cancellable  (attempts: 1)",
            f"{unknown}  not_found  (attempts: 1)",
        ]

    def test_without_wait_it_prints_the_task_ids_and_the_worker_cancels(self, setup, redis_url):
        sim, _ = setup
        (eid,) = ids(1)
        sim.create_requests([eid])

        completed = self.cancel(setup, redis_url, eid)

        assert completed.returncode == 0, completed.stderr
        assert re.fullmatch(rf"{re.escape(eid)}  queued  task [0-9a-f-]{{36}}\n", completed.stdout)
        wait_for(lambda: sim.request(eid)["state"] == "cancelled", 20, "the cancellation")

    def test_a_uuid_is_queued_in_its_canonical_form(self, setup, redis_url):
        sim, _ = setup
        value = uuid.uuid4()
        sim.create_requests([value])

        completed = self.cancel(setup, redis_url, "--wait", str(value))

        assert completed.returncode == 0, completed.stderr
        assert completed.stdout.startswith(f"{normalize_external_id(value)}  cancelled")

    def test_a_cancellation_that_failed_exits_1_and_says_why(self, setup, redis_url):
        sim, _ = setup
        (doomed,) = ids(1)
        sim.create_requests([doomed])
        sim.set_faults({"service_unavailable": {"next": 2}})  # both of its attempts
        try:
            completed = self.cancel(setup, redis_url, "--wait", doomed)
        finally:
            sim.clear_faults()

        assert completed.returncode == 1
        assert completed.stdout.startswith(f"{doomed}  failed  RetriesExhausted: ")
        assert "gave up after 2 attempt(s); last error: ServiceUnavailable" in completed.stdout
        assert completed.stderr == ""


# ----------------------------------------------------------------------------- --direct


def test_direct_cancels_from_this_process_and_prints_outcomes(sim, redis_url, demo_key):
    pending, paid, unknown = ids(3)
    sim.create_requests([pending])
    sim.create_requests([paid], "paid")
    tasks_db = redis_db(redis_url, TASKS_DB)

    completed = kraken_pay(
        "cancel", "--direct", pending, paid, unknown,
        KRAKEN_API_URL=sim.url, REDIS_URL=tasks_db, **demo_key,
    )  # fmt: skip

    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.splitlines() == [
        f"{pending}  cancelled  (attempts: 1)",
        f"{paid}  not_cancellable  (attempts: 1)",
        f"{unknown}  not_found  (attempts: 1)",
    ]
    assert sim.request(pending)["state"] == "cancelled"
    assert completed.stderr == ""


def test_direct_draws_nonces_from_the_workers_redis_sequence(sim, redis_url, demo_key):
    tasks_db = redis.Redis.from_url(redis_db(redis_url, TASKS_DB))
    key = f"kraken:nonce:{Credentials(DEMO_API_KEY, DEMO_API_SECRET).key_id}"
    before = int(tasks_db.get(key) or 0)

    completed = kraken_pay(
        "cancel", "--direct", *ids(1),
        KRAKEN_API_URL=sim.url, REDIS_URL=redis_db(redis_url, TASKS_DB), **demo_key,
    )  # fmt: skip

    assert completed.returncode == 0, completed.stderr
    assert int(tasks_db.get(key)) > before


def test_direct_without_redis_uses_this_hosts_clock_and_says_so(sim, demo_key):
    (eid,) = ids(1)
    sim.create_requests([eid])
    completed = kraken_pay(
        "cancel", "--direct", eid, KRAKEN_API_URL=sim.url, REDIS_URL=NOWHERE, **demo_key
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


def test_direct_with_the_api_unreachable_is_status_4(demo_key):
    completed = kraken_pay(
        "cancel", "--direct", "AAAAAAAAAAE", REDIS_URL=NOWHERE, **demo_key
    )  # KRAKEN_API_URL: nothing listens
    assert completed.returncode == 4
    assert "TransportError: cannot connect to http://127.0.0.1:1" in completed.stderr
    assert "Traceback" not in completed.stderr


# ----------------------------------------------------------------------------- check


@pytest.fixture
def check(monkeypatch):
    """``check(**env)`` runs ``kraken-pay check`` in this process with exactly that env."""

    def run(**env: str):
        for name in list(os.environ):
            if name.startswith(("KRAKEN_", "CELERY_")) or name == "REDIS_URL":
                monkeypatch.delenv(name)
        for name, value in (clean_env() | env).items():
            monkeypatch.setenv(name, value)
        standalone.reset()  # the command reads its configuration afresh, as a new process
        return CliRunner().invoke(cli.cli, ["check"])

    yield run
    monkeypatch.undo()
    standalone.reset()


def test_check_passes_when_all_is_well_and_never_prints_the_secret(check, sim, redis_url, demo_key):
    result = check(KRAKEN_API_URL=sim.url, REDIS_URL=redis_url, **demo_key)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert [line.split()[:2] for line in lines[:5]] == [
        ["ok", "credentials"],
        ["ok", "redis"],
        ["ok", "broker"],
        ["ok", "api"],
        ["ok", "clock"],
    ]
    assert "KRAKEN_API_SECRET decodes to 64 bytes" in lines[0]
    assert "accepted" in lines[3]  # a signed call, answered "not found"
    assert lines[-1] == "all is well" or lines[-1].startswith("works, ")  # warnings: no worker
    assert DEMO_API_SECRET not in result.output


def test_check_reports_missing_credentials_with_status_3(check, sim, redis_url):
    result = check(KRAKEN_API_URL=sim.url, REDIS_URL=redis_url)
    assert result.exit_code == 3
    assert "FAIL  credentials  KRAKEN_API_KEY: is not set" in result.stdout
    assert result.stdout.splitlines()[-1] == "1 problem(s): credentials"


def test_check_reports_an_undecodable_secret_without_showing_it(check, sim, redis_url):
    result = check(
        KRAKEN_API_URL=sim.url,
        REDIS_URL=redis_url,
        KRAKEN_API_KEY=DEMO_API_KEY,
        KRAKEN_API_SECRET=NOT_BASE64,
    )
    assert result.exit_code == 3
    assert "FAIL  credentials  KRAKEN_API_SECRET: must be the base64 text" in result.stdout
    assert NOT_BASE64 not in result.output


def test_check_reports_what_cannot_be_reached_with_status_4(check, demo_key):
    result = check(REDIS_URL=NOWHERE, **demo_key)  # KRAKEN_API_URL: nothing listens
    assert result.exit_code == 4
    failed = [line.split()[1] for line in result.stdout.splitlines() if line.startswith("FAIL")]
    assert failed == ["redis", "broker", "api"]
    assert "clock" not in result.stdout  # no Redis, no clock to compare with
    assert "hunter2" not in result.output


def test_a_configuration_problem_outranks_an_unreachable_service(check):
    result = check(REDIS_URL=NOWHERE)
    assert result.exit_code == 3


def test_check_reaches_a_rabbitmq_broker(check, sim, redis_url, demo_key):
    result = check(
        KRAKEN_API_URL=sim.url, REDIS_URL=redis_url, CELERY_BROKER_URL=RABBITMQ_URL, **demo_key
    )
    assert result.exit_code == 0, result.output
    assert "ok    broker       amqp://guest:***@127.0.0.1:5672// answers" in result.stdout


def test_check_reports_an_unreachable_rabbitmq(check, sim, redis_url, demo_key):
    result = check(
        KRAKEN_API_URL=sim.url,
        REDIS_URL=redis_url,
        CELERY_BROKER_URL="amqp://guest:guest@127.0.0.1:1//",
        **demo_key,
    )
    assert result.exit_code == 4
    assert "FAIL  broker       amqp://guest:***@127.0.0.1:1// does not answer" in result.stdout


def test_check_fails_on_clock_skew_with_status_1(check, sim, redis_url, demo_key, monkeypatch):
    real_time = time.time
    monkeypatch.setattr(cli.time, "time", lambda: real_time() - 30)  # this host is 30 s late
    result = check(KRAKEN_API_URL=sim.url, REDIS_URL=redis_url, **demo_key)
    assert result.exit_code == 1
    assert re.search(r"FAIL  clock        this host is 30\.\d{3}s behind Redis", result.stdout)


def test_check_refuses_a_malformed_setting_with_status_3(check):
    result = check(KRAKEN_TIMEOUT="soon")
    assert result.exit_code == 3
    assert "FAIL  settings     KRAKEN_TIMEOUT: must be a number of seconds" in result.stdout


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


def test_the_simulator_on_a_busy_port_is_one_line_and_status_4(sim):
    completed = kraken_pay("simulator", "--port", str(sim.port))
    assert completed.returncode == 4
    assert one_error_line(completed).startswith(
        f"kraken-pay: cannot listen on 127.0.0.1:{sim.port}"
    )


# ----------------------------------------------------------------------------- reading input


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("30m", 1800), ("1h30m", 5400), ("2d", 172800), ("45", 45), ("1.5h", 5400)],
)
def test_durations(text, seconds):
    assert cli.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "30x", "m30", "-5m"])
def test_bad_durations_say_what_a_duration_looks_like(text):
    with pytest.raises(ValueError, match="is not a duration such as 90s, 30m, 1h30m or 2d"):
        cli.parse_duration(text)


def test_times_are_iso_8601_with_a_zone():
    assert cli.parse_time("2026-12-01T10:00:00Z") == datetime(2026, 12, 1, 10, tzinfo=timezone.utc)
    assert cli.parse_time("2026-12-01T11:00:00+01:00") == datetime(
        2026, 12, 1, 10, tzinfo=timezone.utc
    )


def test_a_time_without_a_zone_is_refused():
    with pytest.raises(ValueError, match="has no time zone"):
        cli.parse_time("2026-12-01T10:00:00")
    with pytest.raises(ValueError, match="is not an ISO 8601 time"):
        cli.parse_time("tomorrow")


# ----------------------------------------------------------------------------- bulk-cancel


def test_bulk_cancel_shows_a_table_of_outcomes_and_reports_bad_lines(worker_setup, redis_url):
    sim, queue = worker_setup
    pending = ids(5)
    paid = ids(2)
    sim.create_requests(pending)
    sim.create_requests(paid, "paid")
    lines = [*pending[:3], "not an id!", *pending[3:], *paid, pending[0]]
    completed = subprocess.run(
        [KRAKEN_PAY, "bulk-cancel", "--queue", queue, "-"],
        input="\n".join(lines) + "\n",
        cwd=REPO,
        env=clean_env(REDIS_URL=redis_db(redis_url, BROKER_DB)),
        capture_output=True,
        text=True,
        timeout=60,
    )

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


def test_bulk_cancel_reads_a_csv_column(worker_setup, redis_url, tmp_path):
    sim, queue = worker_setup
    pending = ids(3)
    sim.create_requests(pending)
    orders = tmp_path / "orders.csv"
    orders.write_text("order,payment_id\n" + "".join(f"{n},{e}\n" for n, e in enumerate(pending)))
    completed = kraken_pay(
        "bulk-cancel", "--queue", queue, "--column", "payment_id", str(orders),
        REDIS_URL=redis_db(redis_url, BROKER_DB),
    )  # fmt: skip
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
