from django.contrib.auth import views as auth_views
from django.urls import include, path

from arpad.login import web_login
from frontend import views

urlpatterns = [
    # Django's login view with a form that counts and limits password checks (arpad/login.py).
    path("accounts/login/", web_login, name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("favicon.ico", views.favicon, name="favicon"),
    path("", views.project_list, name="project-list"),
    path("projects/<int:project_id>/annotate/", views.annotate, name="annotate"),
    path(
        "projects/<int:project_id>/annotate/assignments/<int:assignment_id>/",
        views.assignment_rendered,
        name="annotate-assignment",
    ),
    # The labeling page's next task, and submit + next task in one round trip.
    path("projects/<int:project_id>/annotate/next/", views.annotate_next, name="annotate-next"),
    path(
        "projects/<int:project_id>/annotate/assignments/<int:assignment_id>/submit/",
        views.annotate_submit_next,
        name="annotate-submit-next",
    ),
    # Release a task (back to the queue) + next task; the last answer and its amendment; a manager's preview.
    path(
        "projects/<int:project_id>/annotate/assignments/<int:assignment_id>/release/",
        views.annotate_release_next,
        name="annotate-release-next",
    ),
    path("projects/<int:project_id>/annotate/last/", views.annotate_last, name="annotate-last"),
    path(
        "projects/<int:project_id>/annotate/judgements/<int:judgement_id>/amend/",
        views.annotate_amend,
        name="annotate-amend",
    ),
    path("projects/<int:project_id>/annotate/preview/", views.annotate_preview, name="annotate-preview"),
    # Manager pages: project settings, members, imports, task browser, item review.
    path("", include("frontend.urls_manage")),
    # Agreement dashboard and export downloads.
    path("", include("frontend.urls_dashboard")),
    # Reward-model runs, versions and comparison.
    path("", include("frontend.urls_rewardmodel")),
    # Policies and their training rounds (PPO, SFT).
    path("", include("frontend.urls_rlloop")),
    # Every job kind: the project's jobs and cancel.
    path("", include("frontend.urls_jobs")),
]
