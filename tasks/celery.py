"""``celery -A tasks worker`` and ``celery -A tasks beat`` find the standalone app here.

Celery looks for ``tasks.app``, then ``tasks.celery``: importing :mod:`tasks` alone creates
no app. A configuration that cannot be loaded stops the command with one line.
"""

from tasks.standalone import exit_on_bad_config, standalone_app

__all__ = ["app"]

app = exit_on_bad_config(standalone_app)
