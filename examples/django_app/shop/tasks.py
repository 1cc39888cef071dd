"""A task of the project's own, beside the library's: it goes to the project's queue."""

from celery import shared_task


@shared_task(name="shop.order_cancelled")
def order_cancelled(order_id: int) -> dict[str, int]:
    """Whatever the shop does once an order is cancelled (an email, a stock update...)."""
    return {"order_id": order_id}
