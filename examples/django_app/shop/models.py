from django.db import models


class Order(models.Model):
    """An order and the Kraken Pay payment request that pays for it."""

    payment_external_id = models.CharField(max_length=24, unique=True)
    status = models.CharField(max_length=16, default="pending")


class PaymentEvent(models.Model):
    """A status change Kraken Pay notified, as the shop's receiver of the signal recorded it."""

    payment_external_id = models.CharField(max_length=64, db_index=True)
    status = models.CharField(max_length=16)
    customer_kraktag = models.CharField(max_length=64, null=True)
    received_at = models.DateTimeField(auto_now_add=True)
