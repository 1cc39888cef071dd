"""The Django app of the database store: label ``kraken_pay``."""

from django.apps import AppConfig


class KrakenPayStoreConfig(AppConfig):
    name = "tasks.contrib.django_store"
    label = "kraken_pay"
    verbose_name = "Kraken Pay cancellations"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from tasks.contrib.django_store import store

        store.connect()
