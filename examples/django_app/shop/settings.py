"""Just enough Django for two models, JSON views, a Kraken Pay receiver and a Celery app;
not for production."""

import os
from datetime import timedelta
from pathlib import Path

from kraken.pay.webhooks import KRAKEN_JWKS_URL
from tasks import beat_schedule

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-only-not-a-secret")
DEBUG = True
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]

INSTALLED_APPS = [
    "tasks.contrib.django_store",  # the ledger in the shop's own database (and its admin)
    "shop",
]
MIDDLEWARE: list[str] = []  # a JSON API without sessions; keep CSRF protection for forms
ROOT_URLCONF = "shop.urls"

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("SHOP_DATABASE", str(BASE_DIR / "shop.sqlite3")),
    }
}
if os.environ.get("SHOP_POSTGRES_DB"):  # PostgreSQL instead, as a shop would run it
    DATABASES["default"] = {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": os.environ["SHOP_POSTGRES_DB"],
        "HOST": os.environ.get("SHOP_POSTGRES_HOST", "127.0.0.1"),
        "USER": os.environ.get("SHOP_POSTGRES_USER", "postgres"),
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True

# How long a payment request may stay unpaid before its cancellation runs.
SHOP_PAYMENT_EXPIRY = timedelta(seconds=float(os.environ.get("SHOP_PAYMENT_EXPIRY", 1800)))
# The function that asks Kraken Pay for a payment request (Pay/request/create).
SHOP_CREATE_PAYMENT_REQUEST = "shop.views.create_payment_request"

# Celery, read by shop/celery.py under the CELERY_ namespace. The project's broker and result
# backend carry the library's tasks too (on their own queue, kraken_pay).
CELERY_BROKER_URL = os.environ.get("SHOP_BROKER_URL", "redis://127.0.0.1:6379/0")
CELERY_RESULT_BACKEND = os.environ.get("SHOP_RESULT_BACKEND", CELERY_BROKER_URL)
CELERY_IMPORTS = ["tasks"]  # registers the library's tasks on the project's workers
CELERY_WORKER_PREFETCH_MULTIPLIER = 1  # one reserved task per process: see the README
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600}
CELERY_TIMEZONE = "UTC"

# The library's settings (any key left out falls back to its KRAKEN_* variable).
CELERY_KRAKEN_PAY = {
    "api_key": os.environ.get("SHOP_KRAKEN_API_KEY", ""),
    "api_secret": os.environ.get("SHOP_KRAKEN_API_SECRET", ""),
    "api_url": os.environ.get("SHOP_KRAKEN_API_URL", "https://api.kraken.com"),
    "redis_url": os.environ.get("SHOP_REDIS_URL", "redis://127.0.0.1:6379/0"),
    # Where Kraken's keys for its status notifications are (the simulator's in tests).
    "jwks_url": os.environ.get("SHOP_KRAKEN_JWKS_URL", KRAKEN_JWKS_URL),
}

# The project's beat sends the library's entries beside its own.
CELERY_BEAT_SCHEDULE = {**beat_schedule(CELERY_KRAKEN_PAY)}
