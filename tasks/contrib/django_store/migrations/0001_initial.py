from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True

    dependencies = ()

    operations = (
        migrations.CreateModel(
            name="Cancellation",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("external_id", models.CharField(max_length=64, unique=True)),
                (
                    "state",
                    models.CharField(
                        choices=[("open", "open"), ("closed", "closed"), ("failed", "failed")],
                        default="open",
                        max_length=8,
                    ),
                ),
                ("outcome", models.CharField(blank=True, max_length=32)),
                ("attempts", models.PositiveIntegerField(default=0)),
                ("sends", models.PositiveIntegerField(default=0)),
                ("last_error", models.CharField(blank=True, max_length=200)),
                ("asked_at", models.DateTimeField(auto_now_add=True)),
                ("deadline", models.DateTimeField()),
                ("closed_at", models.DateTimeField(blank=True, null=True)),
            ],
            options={
                "indexes": [models.Index(fields=["state", "deadline"], name="kraken_pay_open_due")],
            },
        ),
    )
