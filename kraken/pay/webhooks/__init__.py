"""Kraken Pay's status notifications: verify the JWT, answer as the guide says, hand it on.

Knows nothing of Celery or of a web framework: ``receive`` is the endpoint for any framework,
``aiohttp_handler`` mounts it in aiohttp. The guide: docs.kraken.com, "Pay webhook notifications".
"""

from kraken.pay.webhooks.callback import ISSUER, REASONS, STATUSES, InvalidCallback, PayCallback
from kraken.pay.webhooks.receiver import (
    MAX_BODY_BYTES,
    SUCCESS,
    Reply,
    aiohttp_handler,
    areceive,
    receive,
)
from kraken.pay.webhooks.verifier import KRAKEN_JWKS_URL, PayCallbackVerifier

__all__ = [
    "ISSUER",
    "KRAKEN_JWKS_URL",
    "MAX_BODY_BYTES",
    "REASONS",
    "STATUSES",
    "SUCCESS",
    "InvalidCallback",
    "PayCallback",
    "PayCallbackVerifier",
    "Reply",
    "aiohttp_handler",
    "areceive",
    "receive",
]
