"""Kraken Pay's notifications in Flask: a blueprint, registered in one line::

    app.register_blueprint(pay_callbacks, url_prefix="/kraken/callbacks")

It answers ``POST`` at the prefix itself, verifies the notification, queues
``kraken_pay.handle_callback`` on the running Celery app and answers as Kraken's guide says.
Your reaction is the ``callback_hook`` setting, called on the worker.
"""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request

from tasks.contrib.receiver import MAX_BODY_BYTES, answer, too_large

__all__ = ["pay_callbacks"]

pay_callbacks = Blueprint("kraken_pay_callbacks", __name__)


@pay_callbacks.post("", strict_slashes=False)
def pay_callback() -> tuple[Response, int]:
    """Verify a notification, queue ``handle_callback``, answer as Kraken's guide says."""
    reply = too_large(request.content_length)
    if reply is None:
        # One byte past the bound is enough to refuse; the rest is never read.
        body = request.stream.read(MAX_BODY_BYTES + 1)
        reply = answer(body, request.content_type)
    return jsonify(reply.body), reply.status
