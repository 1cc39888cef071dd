"""An example Django shop whose orders are paid through Kraken Pay."""

# The project's Celery app is current from the moment Django loads the project, so
# `shared_task`s (the project's and the library's) bind to it.
from shop.celery import app as celery_app

__all__ = ("celery_app",)
