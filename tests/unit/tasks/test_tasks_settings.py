"""tasks/settings.py: settings from the app's kraken_pay dict, then the environment; the
secret never shown; the rate budget's, bulk cancels' and the schedule's, and how they are wired."""

from __future__ import annotations

import copy
import dataclasses
import pickle
import traceback

import pytest
from celery import Celery

from kraken.pay import Credentials
from kraken.pay.errors import ConfigurationError
from kraken.pay.simulator import DEMO_API_KEY, DEMO_API_SECRET
from tasks.beat import beat_schedule
from tasks.bulk import MAX_WINDOW, chunk_window
from tasks.retry import VISIBILITY_MARGIN
from tasks.settings import Secret, Settings, forget, settings_for

SECRET = DEMO_API_SECRET


def test_defaults_need_no_environment_at_all():
    settings = Settings.from_env({})
    assert settings.api_url == "https://api.kraken.com"
    assert settings.redis_url == "redis://127.0.0.1:6379/0"
    assert (settings.queue, settings.ordering) == ("kraken_pay", "serial")
    assert settings.retry_max_delay == 300.0


def test_the_apps_dict_comes_first_then_the_environment_key_by_key():
    conf = {"timeout": 3, "redis_url": "redis://cache:6379/4"}
    env = {"KRAKEN_TIMEOUT": "9", "KRAKEN_ORDERING": "window"}
    settings = Settings.resolve(conf, env)
    assert (settings.timeout, settings.redis_url, settings.ordering) == (
        3.0,
        "redis://cache:6379/4",
        "window",
    )


def test_settings_are_read_from_the_running_app_lazily_and_once():
    app = Celery("proj", set_as_current=False)
    app.conf.kraken_pay = {"queue": "payments", "bulk_chunk": 50}
    try:
        settings = settings_for(app)
        assert (settings.queue, settings.bulk_chunk) == ("payments", 50)
        app.conf.kraken_pay = {"queue": "other"}
        assert settings_for(app) is settings  # resolved once per app
    finally:
        forget(app)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("KRAKEN_TIMEOUT", "ten"),
        ("KRAKEN_TIMEOUT", "-1"),
        ("KRAKEN_TIMEOUT", "1e-320"),
        ("KRAKEN_TIMEOUT", "inf"),
        ("KRAKEN_RETRY_MAX_DELAY", "nan"),
        ("KRAKEN_RETRY_MAX_ATTEMPTS", "0"),
        ("KRAKEN_ORDERING", "parallel"),
        ("KRAKEN_API_URL", "ftp://api.kraken.com"),
        ("KRAKEN_API_URL", "not a url"),
        ("KRAKEN_API_KEY", "key\r\nX-Injected: 1"),
        ("REDIS_URL", "http://127.0.0.1:6379"),
        ("KRAKEN_QUEUE", "two words"),
        ("KRAKEN_RATE_PER_SECOND", "1e-300"),
        ("KRAKEN_SCHEDULE_INTERVAL", "1e-9"),
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
def test_a_bad_value_is_refused_naming_its_variable_and_never_echoing_it(name, value):
    with pytest.raises(ConfigurationError) as caught:
        Settings.from_env({name: value})
    message = str(caught.value)
    assert message.startswith(f"{name}:")
    assert len(value) < 4 or value not in message  # short values are digits of the rule
    assert "\n" not in message


def test_a_bad_value_in_the_dict_names_the_key():
    with pytest.raises(ConfigurationError, match=r"^kraken_pay\['bulk_chunk'\]: "):
        Settings.resolve({"bulk_chunk": 99999}, {})


def test_an_unknown_key_in_the_dict_is_refused():
    with pytest.raises(ConfigurationError, match="unknown setting 'timout'"):
        Settings.resolve({"timout": 3}, {})


def test_time_limits_sit_above_the_clients_own_timeouts():
    settings = Settings.from_env({"KRAKEN_TIMEOUT": "10"})
    soft, hard = settings.task_time_limits()
    assert settings.timeout < settings.attempt_timeout < soft < hard


def test_credentials_are_validated_with_kraken_credentials():
    settings = Settings.from_env({"KRAKEN_API_KEY": DEMO_API_KEY, "KRAKEN_API_SECRET": SECRET})
    assert settings.credentials() == Credentials(DEMO_API_KEY, SECRET)


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"KRAKEN_API_SECRET": SECRET}, "KRAKEN_API_KEY"),
        ({"KRAKEN_API_KEY": DEMO_API_KEY}, "KRAKEN_API_SECRET"),
        ({"KRAKEN_API_KEY": DEMO_API_KEY, "KRAKEN_API_SECRET": "s3cr3t!!not-base64"}, None),
    ],
)
def test_a_missing_or_undecodable_credential_names_the_variable_never_the_value(env, variable):
    settings = Settings.from_env(env)
    with pytest.raises(ConfigurationError) as caught:
        settings.credentials()
    message = str(caught.value)
    assert message.startswith(f"{variable or 'KRAKEN_API_SECRET'}:")
    assert "s3cr3t" not in message
    assert "s3cr3t" not in "".join(traceback.format_exception(caught.value))


@pytest.fixture
def settings() -> Settings:
    return Settings.from_env({"KRAKEN_API_KEY": DEMO_API_KEY, "KRAKEN_API_SECRET": SECRET})


def test_repr_hides_the_key_and_the_secret(settings):
    assert SECRET not in repr(settings)
    assert DEMO_API_KEY not in repr(settings)


def test_vars_and_asdict_show_the_secret_only_as_redacted(settings):
    assert SECRET not in repr(vars(settings))
    assert SECRET not in repr(dataclasses.asdict(settings))
    assert SECRET not in str(copy.deepcopy(settings))


def test_the_settings_cannot_be_pickled_with_their_secret(settings):
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(settings)


def test_the_secret_is_there_for_whoever_asks_for_it_by_name(settings):
    assert settings.api_secret.reveal() == SECRET
    assert settings.api_secret == Secret(SECRET)
    with pytest.raises(TypeError):
        vars(settings.api_secret)


# ---------------------------------------------------------------- the budget, bulk, the schedule


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


def test_one_attempt_may_wait_for_the_budget_before_its_time_runs_out():
    on = Settings.from_env({"KRAKEN_RATE_MAX_WAIT": "20"})
    off = Settings.from_env({"KRAKEN_RATE_MAX_WAIT": "20", "KRAKEN_RATE_PER_SECOND": "off"})
    assert on.attempt_timeout == off.attempt_timeout + 20


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
