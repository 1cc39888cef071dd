"""Receivers for Kraken Pay's status notifications, one per web framework, mounted in a line.

Each verifies the token with the process's one verifier (built on first use from the
``jwks_url`` setting of the running Celery app), answers Kraken as its guide says, and queues
``kraken_pay.handle_callback`` through the running app. A notification that could not be
queued answers 503, so Kraken sends it again. Only the module of one's own framework is
imported: ``tasks`` never requires Django or Flask.
"""
