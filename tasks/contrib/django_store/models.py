"""One row per cancellation asked for, written in the caller's transaction."""

from django.db import models


class Cancellation(models.Model):
    """A cancellation of one payment request, from the ask to Kraken's final answer."""

    OPEN, CLOSED, FAILED = "open", "closed", "failed"
    STATES = ((OPEN, "open"), (CLOSED, "closed"), (FAILED, "failed"))

    external_id = models.CharField(max_length=64, unique=True)
    state = models.CharField(max_length=8, choices=STATES, default=OPEN)
    outcome = models.CharField(max_length=32, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    sends = models.PositiveIntegerField(default=0)  # times the relay sent it again
    last_error = models.CharField(max_length=200, blank=True)
    asked_at = models.DateTimeField(auto_now_add=True)
    deadline = models.DateTimeField()  # news expected by; the relay acts after it
    closed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = (models.Index(fields=("state", "deadline"), name="kraken_pay_open_due"),)

    def __str__(self) -> str:
        return f"{self.external_id} ({self.state}{': ' + self.outcome if self.outcome else ''})"
