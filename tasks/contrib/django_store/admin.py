"""The admin's list of cancellations: open and failed ones first, with attempts and errors."""

from django.contrib import admin

from tasks.contrib.django_store.models import Cancellation


@admin.register(Cancellation)
class CancellationAdmin(admin.ModelAdmin):
    list_display = (
        "external_id",
        "state",
        "outcome",
        "attempts",
        "sends",
        "last_error",
        "asked_at",
        "deadline",
        "closed_at",
    )
    list_filter = ("state", "outcome")
    search_fields = ("external_id",)
    ordering = ("state", "deadline")
    readonly_fields = list_display
