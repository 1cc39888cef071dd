"""tasks/settings.py: the worker's environment, read once; the secret never shown."""

from __future__ import annotations

import traceback

import pytest

from kraken.pay import Credentials
from kraken.pay.errors import ConfigurationError
from kraken.pay.simulator import DEMO_API_KEY, DEMO_API_SECRET
from tasks.settings import Settings

SECRET = DEMO_API_SECRET


def test_defaults_need_no_environment_at_all():
    settings = Settings.from_env({})
    assert settings.api_url == "https://api.kraken.com"
    assert settings.redis_url == "redis://127.0.0.1:6379/0"
    assert settings.broker_url == settings.result_backend == settings.redis_url
    assert settings.ordering == "serial"
    assert (settings.retry_max_delay, settings.visibility_timeout) == (300.0, 900.0)


def test_broker_and_result_backend_default_to_redis_url():
    settings = Settings.from_env({"REDIS_URL": "redis://10.0.0.1:6379/3"})
    assert settings.broker_url == "redis://10.0.0.1:6379/3"
    assert settings.result_backend == "redis://10.0.0.1:6379/3"


def test_broker_and_result_backend_can_be_set_apart():
    settings = Settings.from_env(
        {"CELERY_BROKER_URL": "amqp://guest:guest@127.0.0.1:5672//", "REDIS_URL": "redis://r/1"}
    )
    assert settings.broker_url.startswith("amqp://")
    assert settings.result_backend == "redis://r/1"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("KRAKEN_TIMEOUT", "ten"),
        ("KRAKEN_TIMEOUT", "-1"),
        ("KRAKEN_RETRY_MAX_DELAY", "nan"),
        ("KRAKEN_RETRY_MAX_ATTEMPTS", "0"),
        ("CELERY_VISIBILITY_TIMEOUT", "1h"),
        ("KRAKEN_ORDERING", "parallel"),
    ],
)
def test_a_bad_value_is_refused_naming_its_variable(name, value):
    with pytest.raises(ConfigurationError) as caught:
        Settings.from_env({name: value})
    assert str(caught.value).startswith(f"{name}:")


def test_time_limits_sit_above_the_clients_own_timeouts():
    settings = Settings.from_env({"KRAKEN_TIMEOUT": "10"})
    soft, hard = settings.task_time_limits()
    assert settings.timeout < settings.attempt_timeout < soft < hard


def test_a_soft_time_limit_below_the_request_timeout_is_refused():
    with pytest.raises(ConfigurationError, match="CELERY_TASK_SOFT_TIME_LIMIT"):
        Settings.from_env({"KRAKEN_TIMEOUT": "10", "CELERY_TASK_SOFT_TIME_LIMIT": "5"})


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


def test_repr_hides_the_key_and_the_secret():
    settings = Settings.from_env({"KRAKEN_API_KEY": DEMO_API_KEY, "KRAKEN_API_SECRET": SECRET})
    assert SECRET not in repr(settings)
    assert DEMO_API_KEY not in repr(settings)
