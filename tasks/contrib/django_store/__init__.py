"""The ledger in your own database, for Django: "the order is cancelled" and "its payment
request will be cancelled" are one commit.

Add ``"tasks.contrib.django_store"`` to ``INSTALLED_APPS`` and migrate; then, inside the
transaction that cancels the order::

    from tasks.contrib.django_store import request_cancellation

    with transaction.atomic():
        order.status = "cancelled"
        order.save()
        request_cancellation(order.payment_external_id)

The row is written in your transaction; once it commits, the cancellation is queued. If the
web process dies in between, or the broker is down, the row stays open and beat's relay (the
same ``kraken_pay.dispatch_due`` entry) sends it. The admin lists open and failed rows with
their attempts and last error.
"""

from typing import Any

__all__ = ["request_cancellation"]


def request_cancellation(external_id: Any, *, using: str | None = None) -> Any:
    """Record the cancellation of ``external_id`` in this transaction; queue it on commit."""
    from tasks.contrib.django_store.store import request_cancellation as request

    return request(external_id, using=using)
