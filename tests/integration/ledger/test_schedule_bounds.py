"""Due times come from callers: one too far away, or not finite, is refused before it is stored.

An unbounded one was stored first and then broke ``scheduled()`` and beat's health check
for everyone, so these tests run on a real Redis and read the schedule back afterwards.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone

import pytest
from command_support import kraken_pay

from tasks.schedule import MAX_AHEAD, schedule_cancel, scheduled

EID = "AAAAAAAAAAE"


def now() -> datetime:
    return datetime.now(timezone.utc)


@pytest.mark.parametrize(
    ("when", "message"),
    [
        ({"in_": math.inf}, r"^in_: must be 0 or more and at most 31536000 seconds .*, not inf$"),
        ({"in_": math.nan}, r"^in_: .*, not nan$"),
        ({"in_": -math.inf}, r"^in_: .*, not -inf$"),
        ({"in_": 1e300}, r"^in_: .*, not 1e\+300$"),
        ({"in_": 10**400}, r"^in_: .*, not 1000000000000000000000000000000000000000$"),
        ({"in_": timedelta.max}, r"^in_: .*, not 999999999 days, 23:59:59.999999$"),
        ({"in_": MAX_AHEAD + timedelta(seconds=1)}, r"^in_: must be 0 or more and at most"),
        (
            {"at": datetime.max.replace(tzinfo=timezone.utc)},
            r"^at: must be after 1970 and at most 365 days from now",
        ),
        (
            {"at": datetime.min.replace(tzinfo=timezone.utc)},
            r"^at: must be after 1970 and at most 365 days from now",
        ),
        (
            {"at": now() + timedelta(days=366)},
            r"^at: must be after 1970 and at most 365 days from now, not 20",
        ),
    ],
)
def test_a_due_time_out_of_bounds_is_refused_and_nothing_is_stored(redis_sync, when, message):
    with pytest.raises(ValueError, match=message) as info:
        schedule_cancel(EID, redis=redis_sync, **when)
    assert "\n" not in str(info.value)
    assert redis_sync.zcard("kraken:ledger:due") == 0
    assert scheduled(redis=redis_sync) == []  # the schedule stays readable for everyone


def test_a_due_time_at_the_horizon_is_accepted(redis_sync):
    due = schedule_cancel(EID, in_=MAX_AHEAD, redis=redis_sync)
    assert abs((due - now()) - MAX_AHEAD) < timedelta(seconds=5)
    other = schedule_cancel("AAAAAAAAAAI", at=now() + timedelta(days=364), redis=redis_sync)
    assert [eid for eid, _ in scheduled(redis=redis_sync)] == ["AAAAAAAAAAI", EID]
    assert other < due


def test_a_past_due_time_is_due_now(redis_sync):
    due = schedule_cancel(EID, at=now() - timedelta(days=3 * 365), redis=redis_sync)
    assert scheduled(redis=redis_sync) == [(EID, due)]


def test_the_command_refuses_a_due_time_past_the_horizon_in_one_line(redis_url, redis_sync):
    completed = kraken_pay("schedule", EID, "--in", "400d", REDIS_URL=redis_url)
    assert completed.returncode == 2
    assert "Traceback" not in completed.stderr
    (line,) = completed.stderr.splitlines()
    assert line.startswith("kraken-pay: ValueError: in_: must be 0 or more and at most 31536000")
    assert redis_sync.zcard("kraken:ledger:due") == 0

    health = kraken_pay("scheduled", "--overdue", "120", REDIS_URL=redis_url)
    assert (health.returncode, health.stdout) == (0, "nothing scheduled\n")
