"""The callback hook's setting (``KRAKEN_CALLBACK_HOOK``, ``callback_hook``) and the JWKS URL:
a hook that cannot be loaded, or is not ``module:function``, is refused in one line."""

from __future__ import annotations

import pytest

from kraken.pay.errors import ConfigurationError
from tasks.callbacks import load_hook
from tasks.settings import Settings

not_callable = 42  # a hook target that is not callable


@pytest.mark.parametrize(
    ("target", "error"),
    [
        ("no_such_module_xyz:hook", "cannot load 'no_such_module_xyz:hook': ModuleNotFoundError"),
        ("test_callback_hook:missing", "cannot load 'test_callback_hook:missing': AttributeError"),
        ("test_callback_hook:not_callable", "'test_callback_hook:not_callable' is not callable"),
    ],
)
def test_a_hook_that_cannot_be_loaded_is_refused_in_one_line(target, error):
    with pytest.raises(ConfigurationError) as caught:
        load_hook(target)
    assert str(caught.value) == f"KRAKEN_CALLBACK_HOOK: {error}"


def test_the_settings_refuse_a_hook_that_is_not_module_colon_function():
    with pytest.raises(ConfigurationError) as caught:
        Settings.resolve({"callback_hook": "shop.payments.on_status"})
    assert str(caught.value) == (
        "kraken_pay['callback_hook']: must be 'module:function', such as 'shop.payments:on_status'"
    )


def test_the_jwks_url_setting_defaults_to_krakens_and_refuses_other_schemes():
    assert Settings.resolve({}, {}).jwks_url == (
        "https://www.kraken.com/.well-known/pay-callback-keys.json"
    )
    with pytest.raises(ConfigurationError) as caught:
        Settings.resolve({}, {"KRAKEN_JWKS_URL": "file:///etc/keys.json"})
    assert str(caught.value) == "KRAKEN_JWKS_URL: must be a URL whose scheme is https or http"
