"""The shop's reaction to Kraken Pay's status notifications, on the project's worker.

``tasks.contrib.django.pay_callback_view`` (mounted in urls.py) verifies each notification
and queues ``kraken_pay.handle_callback``; the task sends ``payment_status_changed`` once per
distinct notification, Kraken's repeats folded. Raising here makes the task retry.
"""

from django.dispatch import receiver

from kraken.pay.webhooks import PayCallback
from shop.models import Order, PaymentEvent
from tasks.contrib.django import payment_status_changed


@receiver(payment_status_changed)
def record_payment_status(sender: type, callback: PayCallback, **_: object) -> None:
    PaymentEvent.objects.create(
        payment_external_id=callback.external_id,
        status=callback.status,
        customer_kraktag=callback.customer_kraktag,
    )
    if callback.status == "success":  # paid after all: the shop ships instead of cancelling
        Order.objects.filter(payment_external_id=callback.external_id).update(status="paid")
