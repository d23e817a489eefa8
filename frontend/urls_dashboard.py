"""Manager pages: the agreement dashboard and the export snapshots page (frontend/views_dashboard.py)."""

from django.urls import path

from frontend import views_dashboard

urlpatterns = [
    path("projects/<int:project_id>/dashboard/", views_dashboard.project_dashboard, name="project-dashboard"),
    path("projects/<int:project_id>/exports/", views_dashboard.project_exports, name="project-exports"),
]
