"""Celery tasks for Kraken Pay; knows nothing of HTTP. ``celery -A tasks worker`` uses ``app``."""

from tasks.app import app
from tasks.bulk import bulk_cancel
from tasks.cancel import OUTCOMES, cancel_request
from tasks.retry import RetriesExhausted, RetryPolicy
from tasks.schedule import schedule_cancel, scheduled, unschedule_cancel
from tasks.settings import Settings

__all__ = [
    "OUTCOMES",
    "RetriesExhausted",
    "RetryPolicy",
    "Settings",
    "app",
    "bulk_cancel",
    "cancel_request",
    "schedule_cancel",
    "scheduled",
    "unschedule_cancel",
]
