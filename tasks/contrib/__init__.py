"""Integrations with web frameworks and databases; each imports its framework lazily, so
``tasks`` never requires one.

The receivers of Kraken Pay's status notifications, one per web framework, mount in a line
(:mod:`tasks.contrib.django`, :mod:`tasks.contrib.flask`, :mod:`tasks.contrib.aiohttp`). Each
verifies the token with the process's one verifier (built on first use from the ``jwks_url``
setting of the running Celery app), answers Kraken as its guide says, and queues
``kraken_pay.handle_callback`` through the running app. A notification that could not be
queued answers 503, so Kraken sends it again.
"""
