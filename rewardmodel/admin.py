from django.contrib import admin

from jobs.admin import JOB_LIST_DISPLAY, JOB_READONLY_FIELDS
from rewardmodel.models import RetrainRule, RewardModelRun, RewardModelVersion


@admin.register(RewardModelRun)
class RewardModelRunAdmin(admin.ModelAdmin):
    list_display = JOB_LIST_DISPLAY
    list_filter = ["state", "trigger"]
    raw_id_fields = ["project", "snapshot", "parent_version", "created_by", "cancelled_by"]
    # The worker owns these; editing them by hand would fight it.
    readonly_fields = [*JOB_READONLY_FIELDS, "metrics", "info", "resumed_from_step"]


@admin.register(RewardModelVersion)
class RewardModelVersionAdmin(admin.ModelAdmin):
    list_display = ["id", "project", "number", "is_active", "base_model", "created_at"]
    list_filter = ["is_active"]
    raw_id_fields = ["project", "run", "snapshot", "parent"]
    readonly_fields = ["number", "run", "snapshot", "model_dir", "metrics", "created_at"]


@admin.register(RetrainRule)
class RetrainRuleAdmin(admin.ModelAdmin):
    list_display = ["project", "enabled", "min_new_pairs", "last_checked_at", "last_outcome"]
    raw_id_fields = ["project", "last_run"]
