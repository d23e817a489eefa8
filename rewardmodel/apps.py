from django.apps import AppConfig


class RewardmodelConfig(AppConfig):
    name = "rewardmodel"
    default_auto_field = "django.db.models.BigAutoField"
