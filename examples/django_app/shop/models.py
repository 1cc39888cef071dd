from django.db import models


class Order(models.Model):
    """An order and the Kraken Pay payment request that pays for it."""

    payment_external_id = models.CharField(max_length=24, unique=True)
    status = models.CharField(max_length=16, default="pending")
