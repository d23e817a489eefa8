from django.contrib import admin

from annotation.models import Assignment, ImportedAccount, ImportJob, Judgement, Membership, Project, Prompt, Task
from jobs.admin import JOB_LIST_DISPLAY, JOB_READONLY_FIELDS


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    raw_id_fields = ["user"]


@admin.register(Project)
class ProjectAdmin(admin.ModelAdmin):
    list_display = ["name", "kind", "responses_per_task", "annotations_per_task", "allow_ties", "created_at"]
    search_fields = ["name"]
    inlines = [MembershipInline]


@admin.register(Prompt)
class PromptAdmin(admin.ModelAdmin):
    list_display = ["external_id", "project", "created_at"]
    list_filter = ["project"]
    search_fields = ["external_id"]


@admin.register(Task)
class TaskAdmin(admin.ModelAdmin):
    list_display = ["id", "project", "state", "priority", "judgement_count", "required_annotations", "source"]
    list_filter = ["project", "state", "is_gold"]
    raw_id_fields = ["prompt"]


@admin.register(Assignment)
class AssignmentAdmin(admin.ModelAdmin):
    list_display = ["id", "task", "annotator", "state", "leased_at", "expires_at"]
    list_filter = ["state", "project"]
    raw_id_fields = ["task", "annotator"]


@admin.register(Judgement)
class JudgementAdmin(admin.ModelAdmin):
    list_display = ["id", "task", "annotator", "source", "confidence", "created_at"]
    list_filter = ["source", "task__project"]
    raw_id_fields = ["task", "annotator", "assignment"]


@admin.register(ImportJob)
class ImportJobAdmin(admin.ModelAdmin):
    list_display = [*JOB_LIST_DISPLAY, "format", "file_name"]
    list_filter = ["state", "format"]
    readonly_fields = [*JOB_READONLY_FIELDS, "summary"]


@admin.register(ImportedAccount)
class ImportedAccountAdmin(admin.ModelAdmin):
    """Accounts imports created for a file's labelers: inactive, never to be given a password."""

    list_display = ["user", "project", "format", "file_name", "created_at"]
    list_filter = ["format"]
    raw_id_fields = ["user", "project"]
    readonly_fields = ["created_at"]
