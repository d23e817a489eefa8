from django.urls import path

from frontend import views_jobs

urlpatterns = [
    path("projects/<int:project_id>/jobs/", views_jobs.project_jobs, name="project-jobs"),
    path(
        "projects/<int:project_id>/jobs/<slug:kind>/<int:job_id>/cancel/",
        views_jobs.job_cancel_view,
        name="job-cancel",
    ),
]
