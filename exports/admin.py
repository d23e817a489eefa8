from django.contrib import admin

from exports.models import ExportSnapshot


@admin.register(ExportSnapshot)
class ExportSnapshotAdmin(admin.ModelAdmin):
    list_display = ["id", "project", "state", "progress", "content_hash", "created_at"]
    list_filter = ["state"]
    raw_id_fields = ["project", "created_by"]
    # A snapshot is immutable: its files are named by their hash.
    readonly_fields = [f.name for f in ExportSnapshot._meta.fields]
