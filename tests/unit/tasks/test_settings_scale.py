"""The settings of the rate budget, bulk cancels and the schedule, and how they are wired."""

from __future__ import annotations

import pytest

from kraken.pay import RateBudget
from kraken.pay.errors import ConfigurationError
from kraken.pay.simulator import DEMO_API_KEY, DEMO_API_SECRET
from tasks.beat import beat_schedule
from tasks.bulk import MAX_WINDOW, chunk_window
from tasks.retry import VISIBILITY_MARGIN
from tasks.runtime import build_client
from tasks.settings import Settings

KEYS = {"KRAKEN_API_KEY": DEMO_API_KEY, "KRAKEN_API_SECRET": DEMO_API_SECRET}


def test_defaults_are_krakens_starter_tier_and_modest_chunks():
    settings = Settings.from_env({})
    assert (settings.rate_capacity, settings.rate_per_second) == (15, 0.33)
    assert settings.rate_max_wait == 10.0
    assert (settings.bulk_chunk, settings.bulk_concurrency) == (1000, 8)
    assert settings.schedule_interval == 1.0
    assert (settings.pay_sweep, settings.pay_sweep_interval) == ("", 300.0)


@pytest.mark.parametrize("off", ["off", "OFF", "0"])
def test_the_budget_can_be_turned_off(off):
    assert Settings.from_env({"KRAKEN_RATE_PER_SECOND": off}).rate_per_second is None


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("KRAKEN_RATE_CAPACITY", "0.5"),
        ("KRAKEN_RATE_PER_SECOND", "-1"),
        ("KRAKEN_RATE_MAX_WAIT", "soon"),
        ("KRAKEN_BULK_CHUNK", "5001"),
        ("KRAKEN_BULK_CHUNK", "0"),
        ("KRAKEN_BULK_CONCURRENCY", "0"),
        ("KRAKEN_SCHEDULE_INTERVAL", "0"),
        ("KRAKEN_PAY_SWEEP", "shop.sweeps.abandoned"),
        ("KRAKEN_PAY_SWEEP_INTERVAL", "-5"),
    ],
)
def test_a_bad_value_is_refused_naming_its_variable(name, value):
    with pytest.raises(ConfigurationError) as caught:
        Settings.from_env({name: value})
    assert str(caught.value).startswith(f"{name}:")


def test_one_attempt_may_wait_for_the_budget_before_its_time_runs_out():
    on = Settings.from_env({"KRAKEN_RATE_MAX_WAIT": "20"})
    off = Settings.from_env({"KRAKEN_RATE_MAX_WAIT": "20", "KRAKEN_RATE_PER_SECOND": "off"})
    assert on.attempt_timeout == off.attempt_timeout + 20


async def test_the_production_client_shares_a_budget_per_key_through_redis(redis_url):
    env = {**KEYS, "REDIS_URL": redis_url, "KRAKEN_RATE_CAPACITY": "20"}
    env |= {"KRAKEN_RATE_PER_SECOND": "0.5", "KRAKEN_RATE_MAX_WAIT": "3"}
    client = await build_client(Settings.from_env(env))
    budget = client.rate_budget
    assert isinstance(budget, RateBudget)
    assert (budget.capacity, budget.per_second, budget.max_wait) == (20, 0.5, 3)
    assert budget.key_id == client.credentials.key_id
    await client.close()
    await client.nonce.redis.aclose()


async def test_with_the_budget_off_the_client_has_none(redis_url):
    env = {**KEYS, "REDIS_URL": redis_url, "KRAKEN_RATE_PER_SECOND": "off"}
    client = await build_client(Settings.from_env(env))
    assert client.rate_budget is None
    await client.close()
    await client.nonce.redis.aclose()


def test_a_chunk_works_for_a_minute_at_most():
    assert chunk_window(Settings.from_env({}), 900.0) == MAX_WINDOW == 60


def test_a_chunk_with_its_time_limits_and_a_retry_fits_in_a_short_visibility_timeout():
    settings = Settings.from_env({"KRAKEN_TIMEOUT": "1", "KRAKEN_RETRY_MAX_DELAY": "0.5"})
    window = chunk_window(settings, 60.0)
    _, hard = settings.task_time_limits()
    assert 1 <= window < MAX_WINDOW
    assert hard + window + settings.retry_max_delay + VISIBILITY_MARGIN <= 60


def test_without_a_visibility_timeout_a_chunk_works_for_the_whole_window():
    assert chunk_window(Settings.from_env({}), None) == MAX_WINDOW


def test_beat_dispatches_due_cancellations_every_schedule_interval():
    schedule = beat_schedule(env={"KRAKEN_SCHEDULE_INTERVAL": "3"})
    assert list(schedule) == ["kraken-pay-dispatch-due"]
    entry = schedule["kraken-pay-dispatch-due"]
    assert (entry["task"], entry["schedule"]) == ("kraken_pay.dispatch_due", 3.0)
    assert entry["options"]["queue"] == "kraken_pay"


def test_beat_calls_the_sweep_only_when_one_is_named():
    schedule = beat_schedule({"pay_sweep": "shop.sweeps:abandoned", "pay_sweep_interval": 600})
    entry = schedule["kraken-pay-sweep"]
    assert (entry["task"], entry["schedule"]) == ("kraken_pay.sweep", 600.0)


def test_the_standalone_config_merges_the_same_entries():
    import celeryconfig

    assert set(celeryconfig.beat_schedule) == set(beat_schedule())
