"""PayCallbackVerifier: Kraken's notifications verify, every forgery is refused with its reason,
and the JWKS is fetched once per new kid, never for a known one, at a bounded rate under a flood.

Keys are made in the test; the JWKS comes from a real HTTP server on loopback that counts fetches.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
import uuid
from datetime import datetime, timezone
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from webhook_support import JwksServer, Key, claims, jwks

from kraken.pay import InvalidCallback, PayCallback, PayCallbackVerifier


def b64(data: bytes | dict[str, Any]) -> str:
    raw = json.dumps(data).encode() if isinstance(data, dict) else data
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def forged(header: dict[str, Any], body: dict[str, Any], signature: bytes = b"") -> str:
    return f"{b64(header)}.{b64(body)}.{b64(signature)}"


def refused(verifier: PayCallbackVerifier, token: Any) -> InvalidCallback:
    with pytest.raises(InvalidCallback) as caught:
        verifier.verify(token)
    return caught.value


# ------------------------------------------------------------------------ valid tokens


def test_a_valid_token_verifies_into_a_callback(verifier: PayCallbackVerifier, key: Key) -> None:
    exp = int(time.time()) + 86_400
    callback = verifier.verify(key.sign(claims(exp=exp)))
    assert callback == PayCallback(
        "GSoAAAAAAAA", "success", "bob", datetime.fromtimestamp(exp, tz=timezone.utc), {}
    )
    assert callback.claims["iss"] == "kraken-pay"
    assert callback.claims["payload"]["customer_kraktag"] == "bob"


async def test_averify_verifies_the_same_token(verifier: PayCallbackVerifier, key: Key) -> None:
    callback = await verifier.averify(key.sign(claims("AAE", "cancelled", None)))
    assert (callback.external_id, callback.status, callback.customer_kraktag) == (
        "AAE",
        "cancelled",
        None,
    )


def test_bytes_and_surrounding_whitespace_are_accepted(
    verifier: PayCallbackVerifier, key: Key
) -> None:
    token = key.sign(claims())
    assert verifier.verify(f"\n {token}\r\n".encode()).status == "success"


def test_unknown_claims_and_payload_fields_are_tolerated_and_kept(
    verifier: PayCallbackVerifier, key: Key
) -> None:
    body = claims(iat=int(time.time()), jti="n-1")
    body["payload"]["amount"] = {"asset": "USD", "value": "12.50"}
    callback = verifier.verify(key.sign(body))
    assert callback.claims["jti"] == "n-1"
    assert callback.claims["payload"]["amount"]["value"] == "12.50"


def test_every_documented_status_verifies(verifier: PayCallbackVerifier, key: Key) -> None:
    for status in ("success", "failed", "cancelled", "expired", "declined"):
        assert verifier.verify(key.sign(claims(status=status))).status == status


def test_the_audience_may_be_a_string(verifier: PayCallbackVerifier, key: Key) -> None:
    assert verifier.verify(key.sign(claims(aud="shop"))).claims["aud"] == "shop"


def test_notification_id_is_the_same_for_a_re_signed_repeat(
    verifier: PayCallbackVerifier, key: Key
) -> None:
    first = verifier.verify(key.sign(claims(exp=int(time.time()) + 100)))
    again = verifier.verify(key.sign(claims(exp=int(time.time()) + 200)))
    other = verifier.verify(key.sign(claims(status="failed")))
    assert first.notification_id == again.notification_id != other.notification_id


def test_to_dict_is_json_and_from_dict_rebuilds_the_callback(
    verifier: PayCallbackVerifier, key: Key
) -> None:
    callback = verifier.verify(key.sign(claims()))
    data = json.loads(json.dumps(callback.to_dict()))
    assert data["notification_id"] == callback.notification_id
    assert PayCallback.from_dict(data) == callback


def test_a_token_within_the_leeway_of_its_expiry_still_verifies(
    server: JwksServer, key: Key
) -> None:
    verifier = PayCallbackVerifier(server.url, jwks=jwks(key), leeway=60)
    assert verifier.verify(key.sign(claims(exp=time.time() - 30))).status == "success"


# ------------------------------------------------------------------------ forgeries


def test_alg_none_is_refused(verifier: PayCallbackVerifier, key: Key) -> None:
    token = forged({"alg": "none", "kid": key.kid, "typ": "JWT"}, claims())
    assert refused(verifier, token).reason == "bad_algorithm"


def test_hs256_with_the_public_key_as_secret_is_refused(
    verifier: PayCallbackVerifier, key: Key
) -> None:
    pem = key.private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    signing_input = f"{b64({'alg': 'HS256', 'kid': key.kid})}.{b64(claims())}"
    mac = hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()
    assert refused(verifier, f"{signing_input}.{b64(mac)}").reason == "bad_algorithm"


@pytest.mark.parametrize("alg", ["ES384", "ES512", "RS256", "PS256", "EdDSA", "es256", None])
def test_any_algorithm_but_es256_is_refused(
    verifier: PayCallbackVerifier, key: Key, alg: str | None
) -> None:
    error = refused(verifier, forged({"alg": alg, "kid": key.kid}, claims(), b"x" * 64))
    assert error.reason == "bad_algorithm"
    assert "alg: only ES256" in str(error)


@pytest.mark.parametrize("param", ["jwk", "jku", "x5u", "x5c"])
def test_a_key_named_by_the_token_itself_is_refused(
    verifier: PayCallbackVerifier, param: str
) -> None:
    attacker = Key("attacker")
    value = {"jwk": attacker.jwk(), "jku": "http://127.0.0.1:9/jwks", "x5u": "http://127.0.0.1:9/c"}
    token = attacker.sign(claims(), **{param: value.get(param, ["MIIB"])})
    error = refused(verifier, token)
    assert error.reason == "bad_header"
    assert str(error).startswith(f"bad_header: {param}:")
    assert verifier.fetches == 0  # refused before any key is looked up


def test_a_tampered_payload_fails_the_signature(verifier: PayCallbackVerifier, key: Key) -> None:
    header, _, signature = key.sign(claims(status="failed")).split(".")
    token = f"{header}.{b64(claims(status='success'))}.{signature}"
    assert refused(verifier, token).reason == "bad_signature"


def test_a_token_signed_by_another_key_under_a_known_kid_fails_the_signature(
    verifier: PayCallbackVerifier, key: Key
) -> None:
    impostor = Key(key.kid)
    assert refused(verifier, impostor.sign(claims())).reason == "bad_signature"


def test_a_truncated_signature_fails_the_signature(verifier: PayCallbackVerifier, key: Key) -> None:
    header, body, signature = key.sign(claims()).split(".")
    assert refused(verifier, f"{header}.{body}.{signature[:40]}").reason == "bad_signature"


def test_an_unknown_kid_is_refused(verifier: PayCallbackVerifier) -> None:
    error = refused(verifier, Key("nobody").sign(claims()))
    assert error.reason == "unknown_key"
    assert "kid: 'nobody'" in str(error)


def test_an_expired_token_is_refused(verifier: PayCallbackVerifier, key: Key) -> None:
    error = refused(verifier, key.sign(claims(exp=int(time.time()) - 3600)))
    assert error.reason == "expired"
    assert str(error).startswith("expired: exp: expired")


@pytest.mark.parametrize("iss", ["kraken", "Kraken-Pay", "", None, 1])
def test_a_wrong_or_missing_issuer_is_refused(
    verifier: PayCallbackVerifier, key: Key, iss: Any
) -> None:
    body = claims(iss=iss)
    if iss is None:
        del body["iss"]
    assert refused(verifier, key.sign(body)).reason == "wrong_issuer"


@pytest.mark.parametrize(
    "token",
    [
        "",
        "hello",
        "a.b",
        "a.b.c.d",
        "!!!.???.***",
        b64({"alg": "ES256", "kid": "kraken-1"}) + ".not-json!.sig",
        b"\xff\xfe.\x00.\x01",
        "a" * 9000 + ".b.c",
    ],
)
def test_what_is_not_a_jwt_is_refused(verifier: PayCallbackVerifier, token: Any) -> None:
    assert refused(verifier, token).reason == "not_a_jwt"


def test_a_payload_that_is_not_a_json_object_is_refused(
    verifier: PayCallbackVerifier, key: Key
) -> None:
    token = jwt.api_jws.encode(b"[1, 2]", key.private, algorithm="ES256", headers={"kid": key.kid})
    assert refused(verifier, token).reason == "not_a_jwt"


def test_a_token_of_the_wrong_type_is_refused(verifier: PayCallbackVerifier) -> None:
    assert refused(verifier, 12345).reason == "not_a_jwt"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda c: c["payload"].update(status="paid"), "payload.status"),
        (lambda c: c["payload"].update(status=None), "payload.status"),
        (lambda c: c["payload"].update(external_id=42), "payload.external_id"),
        (lambda c: c["payload"].update(external_id=""), "payload.external_id"),
        (lambda c: c["payload"].pop("external_id"), "payload.external_id"),
        (lambda c: c["payload"].update(customer_kraktag=7), "payload.customer_kraktag"),
        (lambda c: c.update(payload="success"), "payload"),
        (lambda c: c.pop("payload"), "payload"),
        (lambda c: c.update(exp="tomorrow"), "exp"),
        (lambda c: c.update(exp=True), "exp"),
        (lambda c: c.update(exp=1e20), "exp"),
        (lambda c: c.update(exp=-5), "exp"),
        (lambda c: c.pop("exp"), "exp"),
        (lambda c: c.update(aud=["shop"]), "aud"),
    ],
)
def test_a_claim_of_the_wrong_type_is_refused_naming_it(
    verifier: PayCallbackVerifier, key: Key, change: Any, field: str
) -> None:
    body = claims()
    change(body)
    error = refused(verifier, key.sign(body))
    assert error.reason == "bad_claim"
    assert str(error).startswith(f"bad_claim: {field}: must be")


@pytest.mark.parametrize("kid", [None, "", 7, "k" * 300])
def test_a_missing_or_malformed_kid_is_refused(
    verifier: PayCallbackVerifier, key: Key, kid: Any
) -> None:
    header = {"alg": "ES256"} if kid is None else {"alg": "ES256", "kid": kid}
    assert refused(verifier, forged(header, claims(), b"x" * 64)).reason == "bad_header"


def test_errors_never_carry_the_token(verifier: PayCallbackVerifier, key: Key) -> None:
    token = key.sign(claims(exp=1))
    error = refused(verifier, token)
    for part in token.split("."):
        assert part not in str(error) and part not in repr(error)


# ------------------------------------------------------------------------ key cache


def test_a_known_kid_never_fetches_the_jwks(server: JwksServer, key: Key) -> None:
    verifier = PayCallbackVerifier(server.url, jwks=jwks(key))
    for _ in range(20):
        verifier.verify(key.sign(claims()))
    assert server.hits == 0


def test_an_unknown_kid_fetches_once_and_is_cached_forever(
    verifier: PayCallbackVerifier, server: JwksServer, key: Key
) -> None:
    for _ in range(20):
        verifier.verify(key.sign(claims()))
    server.serve()  # Kraken drops the key from its JWKS: a kid always names the same key
    verifier.verify(key.sign(claims()))
    assert server.hits == 1


def test_a_new_kid_is_fetched_once_when_kraken_rotates_keys(key: Key) -> None:
    now = [0.0]
    with JwksServer(key) as server:
        verifier = PayCallbackVerifier(server.url, monotonic=lambda: now[0])
        verifier.verify(key.sign(claims()))
        rotated = Key("kraken-2")
        server.serve(key, rotated)
        now[0] += 10.0
        for _ in range(5):
            assert verifier.verify(rotated.sign(claims())).status == "success"
        assert server.hits == 2


def test_a_flood_of_unknown_kids_fetches_at_most_once_per_interval(
    server: JwksServer, key: Key
) -> None:
    now = [1000.0]
    verifier = PayCallbackVerifier(server.url, min_refetch_interval=10, monotonic=lambda: now[0])
    reasons = set()
    for i in range(600):  # one minute of forged kids, ten a second
        now[0] = 1000.0 + i / 10
        try:
            verifier.verify(Key(f"forged-{uuid.uuid4()}").sign(claims()))
        except InvalidCallback as exc:
            reasons.add(exc.reason)
    assert reasons == {"unknown_key"}
    assert server.hits == verifier.fetches == 6  # at 0, 10, 20, 30, 40 and 50 seconds
    assert verifier.verify(key.sign(claims())).status == "success"  # Kraken's key still works


async def test_concurrent_notifications_for_a_new_kid_share_one_fetch(
    server: JwksServer, key: Key
) -> None:
    server.delay = 0.2  # every notification arrives while the first fetch is in flight
    verifier = PayCallbackVerifier(server.url)
    results = await asyncio.gather(*(verifier.averify(key.sign(claims())) for _ in range(20)))
    assert {r.status for r in results} == {"success"}
    assert server.hits == 1


async def test_an_async_flood_of_unknown_kids_fetches_once(server: JwksServer) -> None:
    verifier = PayCallbackVerifier(server.url, min_refetch_interval=60)
    tokens = [Key(f"forged-{i}").sign(claims()) for i in range(200)]
    outcomes = await asyncio.gather(*(verifier.averify(t) for t in tokens), return_exceptions=True)
    assert {getattr(o, "reason", None) for o in outcomes} == {"unknown_key"}
    assert server.hits == 1


# ------------------------------------------------------------------------ the JWKS fetch


def test_a_slow_jwks_times_out_as_unavailable(server: JwksServer, key: Key) -> None:
    server.delay = 5.0
    verifier = PayCallbackVerifier(server.url, timeout=0.1)
    started = time.monotonic()
    error = refused(verifier, key.sign(claims()))
    assert error.reason == "jwks_unavailable" and error.transient
    assert time.monotonic() - started < 3.0


async def test_a_slow_jwks_times_out_as_unavailable_on_the_loop(
    server: JwksServer, key: Key
) -> None:
    server.delay = 5.0
    verifier = PayCallbackVerifier(server.url, timeout=0.1)
    with pytest.raises(InvalidCallback) as caught:
        await asyncio.wait_for(verifier.averify(key.sign(claims())), 3.0)
    assert caught.value.reason == "jwks_unavailable"


@pytest.mark.parametrize("use_loop", [False, True])
def test_a_jwks_larger_than_the_bound_is_refused(
    server: JwksServer, key: Key, use_loop: bool
) -> None:
    server.body = json.dumps({"keys": [key.jwk()], "padding": "x" * 100_000}).encode()
    verifier = PayCallbackVerifier(server.url, max_jwks_bytes=64 * 1024)
    token = key.sign(claims())
    with pytest.raises(InvalidCallback) as caught:
        asyncio.run(verifier.averify(token)) if use_loop else verifier.verify(token)
    assert caught.value.reason == "jwks_unavailable"
    assert "larger than 65536 bytes" in str(caught.value)


@pytest.mark.parametrize(
    ("status", "body", "why"),
    [
        (500, b"oops", "HTTP 500"),
        (200, b"<html>", "not valid JSON"),
        (200, b'{"keys": {}}', "'keys' list"),
    ],
)
def test_a_broken_jwks_answer_is_unavailable(
    server: JwksServer, key: Key, status: int, body: bytes, why: str
) -> None:
    server.status, server.body = status, body
    error = refused(PayCallbackVerifier(server.url), key.sign(claims()))
    assert error.reason == "jwks_unavailable"
    assert why in str(error)


def test_keys_that_are_not_public_p256_signing_keys_are_ignored(server: JwksServer) -> None:
    rsa = {"kty": "RSA", "kid": "rsa", "n": "AQAB", "e": "AQAB"}
    wrong_alg = {**Key("es384").jwk(), "alg": "ES384"}
    for_encryption = {**Key("enc").jwk(), "use": "enc"}
    broken = {**Key("broken").jwk(), "x": "not-a-point"}
    bad = {"keys": [rsa, wrong_alg, for_encryption, broken, 5]}
    verifier = PayCallbackVerifier(server.url, jwks=bad)
    assert repr(verifier).endswith("keys=0)")
    for kid in ("es384", "enc", "broken"):
        assert refused(verifier, Key(kid).sign(claims())).reason == "unknown_key"


def test_bad_settings_are_refused_naming_the_field() -> None:
    with pytest.raises(ValueError, match=r"^jwks_url: must be an http"):
        PayCallbackVerifier("file:///etc/passwd")
    with pytest.raises(ValueError, match=r"^timeout: must be > 0"):
        PayCallbackVerifier(timeout=0)
    with pytest.raises(ValueError, match=r"^jwks: must be an object"):
        PayCallbackVerifier(jwks={"nokeys": []})
