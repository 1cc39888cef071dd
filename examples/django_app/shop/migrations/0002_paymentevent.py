from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = (("shop", "0001_initial"),)

    operations = (
        migrations.CreateModel(
            name="PaymentEvent",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("payment_external_id", models.CharField(db_index=True, max_length=64)),
                ("status", models.CharField(max_length=16)),
                ("customer_kraktag", models.CharField(max_length=64, null=True)),
                ("received_at", models.DateTimeField(auto_now_add=True)),
            ],
        ),
    )
