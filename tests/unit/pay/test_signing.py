"""API-Sign and Credentials: Kraken's published vector, and a secret that never shows."""

from __future__ import annotations

import copy
import logging
import pickle

import pytest

from kraken.pay import Credentials, sign
from kraken.pay.errors import ConfigurationError

# Kraken's documented example (REST authentication guide, AddOrder).
VECTOR_SECRET = (
    "kQH5HW/8p1uGOVjbgWA7FunAmGO8lsSUXNsu3eow76sz84Q18fWxnyRzBHCd3pd5nE9qa99HAZtuZuj6F1huXg=="
)
VECTOR_NONCE = 1616492376594
VECTOR_BODY = "nonce=1616492376594&ordertype=limit&pair=XBTUSD&price=37500&type=buy&volume=1.25"
VECTOR_PATH = "/0/private/AddOrder"
VECTOR_SIGN = (
    "4/dpxb3iT4tp/ZCVEwSnEsLxx0bqyhLpdfOpc6fn7OR8+UClSV5n9E6aSS8MPtnRfp32bAb0nmbRn6H8ndwLUQ=="
)


def test_sign_matches_krakens_published_vector():
    assert sign(VECTOR_PATH, VECTOR_NONCE, VECTOR_BODY, VECTOR_SECRET) == VECTOR_SIGN


def test_sign_accepts_bytes_body_and_string_nonce():
    assert sign(VECTOR_PATH, str(VECTOR_NONCE), VECTOR_BODY.encode(), VECTOR_SECRET) == VECTOR_SIGN


def test_credentials_sign_equals_function():
    creds = Credentials("key", VECTOR_SECRET)
    assert creds.sign(VECTOR_PATH, VECTOR_NONCE, VECTOR_BODY.encode()) == VECTOR_SIGN


def test_sign_depends_on_path_nonce_and_body():
    base = sign(VECTOR_PATH, VECTOR_NONCE, VECTOR_BODY, VECTOR_SECRET)
    assert sign("/0/private/Other", VECTOR_NONCE, VECTOR_BODY, VECTOR_SECRET) != base
    assert sign(VECTOR_PATH, VECTOR_NONCE + 1, VECTOR_BODY, VECTOR_SECRET) != base
    assert sign(VECTOR_PATH, VECTOR_NONCE, VECTOR_BODY + "&x=1", VECTOR_SECRET) != base


@pytest.mark.parametrize("bad", ["not base64!!", "abc", "", "kQH5HW/8p1uGOVjbgWA7Fun=AmGO8"])
def test_undecodable_secret_is_refused_when_built_without_echoing_it(bad):
    with pytest.raises(ConfigurationError) as info:
        Credentials("key", bad)
    assert "api_secret" in str(info.value)
    if bad:
        assert bad not in str(info.value)
    # No chained exception may carry the secret into a traceback.
    assert info.value.__cause__ is None
    assert info.value.__context__ is None or info.value.__suppress_context__


def test_empty_api_key_is_refused():
    with pytest.raises(ConfigurationError, match="api_key"):
        Credentials("  ", VECTOR_SECRET)


def test_secret_never_in_repr_str_or_logs(caplog):
    creds = Credentials("my-api-key", VECTOR_SECRET)
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("test").info("creds %s %r", creds, creds)
    for text in (repr(creds), str(creds), caplog.text, repr([creds]), f"{creds}"):
        assert VECTOR_SECRET not in text
        assert VECTOR_SECRET[:12] not in text
    assert "redacted" in repr(creds)


def test_credentials_refuse_pickle_and_copy():
    creds = Credentials("my-api-key", VECTOR_SECRET)
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(creds)
    with pytest.raises(TypeError):
        copy.copy(creds)


def test_credentials_have_no_dict_to_dump():
    creds = Credentials("my-api-key", VECTOR_SECRET)
    assert not hasattr(creds, "__dict__")
    assert VECTOR_SECRET not in str(vars(type(creds)))


def test_key_id_is_stable_and_not_the_key():
    a = Credentials("my-api-key", VECTOR_SECRET)
    b = Credentials("my-api-key", VECTOR_SECRET)
    assert a.key_id == b.key_id
    assert "my-api-key" not in a.key_id
    assert Credentials("other", VECTOR_SECRET).key_id != a.key_id
