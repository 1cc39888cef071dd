from django.urls import path

from shop import views
from tasks.contrib.django import pay_callback_view

urlpatterns = [
    path("orders", views.create_order),
    path("orders/<int:order_id>/cancel", views.cancel_order),
    # Kraken Pay's status notifications (register this URL with Kraken).
    path("kraken/callbacks", pay_callback_view),
]
