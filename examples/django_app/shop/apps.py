from django.apps import AppConfig


class ShopConfig(AppConfig):
    name = "shop"

    def ready(self) -> None:
        # Connects the shop's receiver of Kraken Pay's payment_status_changed signal.
        from shop import payments  # noqa: F401
