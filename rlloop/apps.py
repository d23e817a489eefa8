from django.apps import AppConfig


class RlloopConfig(AppConfig):
    name = "rlloop"
    default_auto_field = "django.db.models.BigAutoField"
