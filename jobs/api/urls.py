"""Job routes of every kind, mounted at /api/v1/ by ``arpad.urls``."""

from django.urls import path

from jobs.api import views

_BASE = "projects/<int:project_id>/jobs/"

urlpatterns = [
    path(_BASE, views.JobListView.as_view(), name="api-jobs"),
    path(f"{_BASE}<slug:kind>/<int:job_id>/", views.JobDetailView.as_view(), name="api-job"),
    path(f"{_BASE}<slug:kind>/<int:job_id>/cancel/", views.JobCancelView.as_view(), name="api-job-cancel"),
]
