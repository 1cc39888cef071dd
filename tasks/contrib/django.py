"""Kraken Pay's notifications in Django: a view, and a signal sent on the worker.

Mount the view in one line of ``urls.py``::

    path("kraken/callbacks", pay_callback_view),

and react where Django projects react, with a receiver of :data:`payment_status_changed`
(``sender`` is ``PayCallback``, ``callback`` the verified notification). The signal is sent by
``kraken_pay.handle_callback`` on the worker, once per distinct notification; a receiver that
raises makes the task retry. Importing this module imports Django; ``tasks`` itself never does.
"""

from __future__ import annotations

from django.dispatch import Signal
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from kraken.pay.webhooks import PayCallback, Reply
from tasks.contrib.receiver import MAX_BODY_BYTES, answer, too_large

__all__ = ["pay_callback_view", "payment_status_changed", "send_payment_status_changed"]

# Arguments: callback (a PayCallback). Sent with sender=PayCallback.
payment_status_changed = Signal()


def send_payment_status_changed(callback: PayCallback) -> None:
    """Called by ``handle_callback``; ``send`` (not ``send_robust``) so an error is retried."""
    payment_status_changed.send(sender=PayCallback, callback=callback)


def _content_length(request: HttpRequest) -> int | None:
    try:
        return int(request.META.get("CONTENT_LENGTH") or 0) or None
    except ValueError:
        return None


def _response(reply: Reply) -> HttpResponse:
    return JsonResponse(reply.body, status=reply.status)


@csrf_exempt  # Kraken signs its notifications; it has no CSRF token to send
@require_POST
def pay_callback_view(request: HttpRequest) -> HttpResponse:
    """Verify a notification, queue ``handle_callback``, answer as Kraken's guide says."""
    reply = too_large(_content_length(request))
    if reply is None:
        # One byte past the bound is enough to refuse; the rest is never read.
        body = request.read(MAX_BODY_BYTES + 1)
        reply = answer(body, request.content_type)
    return _response(reply)
