"""Export routes, mounted at /api/v1/ by ``arpad.urls``."""

from django.urls import path

from exports.api import views

_BASE = "projects/<int:project_id>/exports/"

urlpatterns = [
    path(_BASE, views.ExportListView.as_view(), name="api-exports"),
    path(f"{_BASE}preview/", views.ExportPreviewView.as_view(), name="api-export-preview"),
    path(f"{_BASE}<int:export_id>/", views.ExportDetailView.as_view(), name="api-export"),
    path(f"{_BASE}<int:export_id>/files/<path:name>", views.ExportFileView.as_view(), name="api-export-file"),
    path(f"{_BASE}<int:export_id>/archive/", views.ExportArchiveView.as_view(), name="api-export-archive"),
    path(f"{_BASE}<int:export_id>/cancel/", views.ExportCancelView.as_view(), name="api-export-cancel"),
]
