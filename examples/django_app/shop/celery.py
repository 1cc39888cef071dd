"""The project's own Celery app, laid out as Celery's "First steps with Django" says.

The library's tasks run on it: ``CELERY_IMPORTS = ["tasks"]`` in settings.py registers
them, ``CELERY_KRAKEN_PAY`` configures them, and a worker started with
``-Q celery,kraken_pay`` serves the project's tasks and the library's alike.
"""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "shop.settings")

app = Celery("shop")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
