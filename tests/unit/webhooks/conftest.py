"""The webhooks' fixtures: a key made in the test, a real JWKS server serving it, a verifier."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from webhook_support import JwksServer, Key

from kraken.pay.webhooks import PayCallbackVerifier


@pytest.fixture
def key() -> Key:
    """Kraken's signing key, as far as these tests know."""
    return Key("kraken-1")


@pytest.fixture
def server(key: Key) -> Iterator[JwksServer]:
    """A JWKS server on loopback that serves ``key`` and counts its fetches."""
    with JwksServer(key) as running:
        yield running


@pytest.fixture
def verifier(server: JwksServer) -> PayCallbackVerifier:
    """A verifier that fetches its keys from ``server``."""
    return PayCallbackVerifier(server.url, timeout=2.0)
