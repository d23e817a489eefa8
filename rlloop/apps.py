from django.apps import AppConfig


class RlloopConfig(AppConfig):
    name = "rlloop"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Cycles move on when a job ends: rlloop.cycle registers its listener on import.
        from rlloop import cycle  # noqa: F401
