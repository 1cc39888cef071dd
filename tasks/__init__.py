"""Celery tasks for Kraken Pay, for your own Celery app or the standalone one.

The tasks are ``shared_task``s: they run on whichever app is current (yours, in a Django or
Flask project) and go to the ``kraken_pay`` queue. Importing this package creates no app,
reads no setting and changes nothing in your process; it connects worker handlers that act
only on a worker consuming ``kraken_pay``. ``celery -A tasks worker`` finds the standalone
app in :mod:`tasks.celery`.
"""

from tasks import worker as _worker
from tasks.base import KrakenPayTask
from tasks.beat import beat_schedule
from tasks.bulk import bulk_cancel
from tasks.callbacks import handle_callback
from tasks.cancel import OUTCOMES, cancel_request
from tasks.ledger import NotRecorded, ledger_for
from tasks.retry import RetriesExhausted, RetryPolicy
from tasks.schedule import schedule_cancel, scheduled, unschedule_cancel
from tasks.settings import Settings, settings_for

_worker.connect()

__all__ = [
    "OUTCOMES",
    "KrakenPayTask",
    "NotRecorded",
    "RetriesExhausted",
    "RetryPolicy",
    "Settings",
    "beat_schedule",
    "bulk_cancel",
    "cancel_request",
    "handle_callback",
    "ledger_for",
    "schedule_cancel",
    "scheduled",
    "settings_for",
    "unschedule_cancel",
]
