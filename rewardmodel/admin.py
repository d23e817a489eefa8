from django.contrib import admin

from rewardmodel.models import RetrainRule, RewardModelRun, RewardModelVersion


@admin.register(RewardModelRun)
class RewardModelRunAdmin(admin.ModelAdmin):
    list_display = ["id", "project", "state", "progress", "attempts", "worker_id", "heartbeat_at", "created_at"]
    list_filter = ["state", "trigger"]
    raw_id_fields = ["project", "snapshot", "parent_version", "created_by"]
    # The worker owns these; editing them by hand would fight it.
    readonly_fields = ["metrics_history", "log_tail", "metrics", "info", "heartbeat_at", "worker_id", "step"]


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
