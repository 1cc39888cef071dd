"""Just enough Django for one model and two JSON views; not settings for production."""

import os
from datetime import timedelta
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-only-not-a-secret")
DEBUG = True
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]

INSTALLED_APPS = ["shop"]
MIDDLEWARE: list[str] = []  # a JSON API without sessions; keep CSRF protection for forms
ROOT_URLCONF = "shop.urls"

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("SHOP_DATABASE", str(BASE_DIR / "shop.sqlite3")),
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True

# How long a payment request may stay unpaid before its cancellation runs.
SHOP_PAYMENT_EXPIRY = timedelta(minutes=30)
# The function that asks Kraken Pay for a payment request (Pay/request/create).
SHOP_CREATE_PAYMENT_REQUEST = "shop.views.create_payment_request"
