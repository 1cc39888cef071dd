"""Creating an order and cancelling it; Kraken Pay's side happens after the commit.

Kraken's rule for ``Pay/request/create``: the external id is committed in the database
before the call. So an order is first saved as "creating", then its payment request is
created, then it is "pending". Cancelling an order records the cancellation of its payment
request in the same transaction (``request_cancellation``, the ledger in the shop's own
database): a rolled-back change never cancels a payment, a committed one always does, and
``cancel_request`` is queued only once the change is visible.
"""

from __future__ import annotations

import json
import os
import urllib.request
import uuid

from django.conf import settings
from django.db import transaction
from django.http import HttpRequest, JsonResponse
from django.shortcuts import get_object_or_404
from django.utils.module_loading import import_string
from django.views.decorators.http import require_POST

from kraken.pay import normalize_external_id
from shop.models import Order
from shop.tasks import order_cancelled
from tasks import schedule_cancel, unschedule_cancel
from tasks.contrib.django_store import request_cancellation


def create_payment_request(external_id: str) -> None:
    """Where your code asks Kraken Pay for the payment request (``Pay/request/create``).

    Run against the simulator (``SHOP_SIMULATOR_URL`` set, as in README.md), it creates the
    request there instead, so that its cancellation has something to cancel.
    """
    simulator = os.environ.get("SHOP_SIMULATOR_URL")
    if simulator:
        body = json.dumps({"external_id": external_id}).encode()
        request = urllib.request.Request(f"{simulator}/_sim/requests", data=body)
        urllib.request.urlopen(request, timeout=5).close()


def _json(order: Order, status: int = 200) -> JsonResponse:
    data = {"id": order.pk, "payment_external_id": order.payment_external_id}
    return JsonResponse(data | {"status": order.status}, status=status)


def _after_cancel(order_id: int, external_id: str) -> None:
    """After the commit: forget the request's scheduled expiry, and tell the rest of the shop
    (a task of the project's own, on the project's queue)."""
    unschedule_cancel(external_id)
    order_cancelled.delay(order_id)


@require_POST
def create_order(request: HttpRequest) -> JsonResponse:
    eid = normalize_external_id(uuid.uuid4())
    order = Order.objects.create(payment_external_id=eid, status="creating")  # committed
    import_string(settings.SHOP_CREATE_PAYMENT_REQUEST)(eid)
    with transaction.atomic():
        order.status = "pending"
        order.save(update_fields=["status"])
        # Unless it is paid or cancelled first, the request goes when it expires.
        transaction.on_commit(lambda: schedule_cancel(eid, in_=settings.SHOP_PAYMENT_EXPIRY))
    return _json(order, status=201)


@require_POST
def cancel_order(request: HttpRequest, order_id: int) -> JsonResponse:
    with transaction.atomic():
        order = get_object_or_404(Order.objects.select_for_update(), pk=order_id)
        order.status = "cancelled"
        order.save(update_fields=["status"])
        eid = order.payment_external_id
        # In the same transaction: the order is cancelled and its payment request will be,
        # or neither. Queued on commit; if this process dies first, beat's relay sends it.
        request_cancellation(eid)
        transaction.on_commit(lambda: _after_cancel(order_id, eid))
    return _json(order)
