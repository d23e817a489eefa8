"""Annotation routes, mounted at /api/v1/ by ``arpad.urls``. The URL shapes are a contract with the UI and the benchmark."""

from django.urls import path

from annotation.api import report_views, views

urlpatterns = [
    path("auth/token/", views.TokenView.as_view(), name="api-token"),
    path("projects/", views.ProjectListView.as_view(), name="api-projects"),
    path("projects/<int:project_id>/", views.ProjectDetailView.as_view(), name="api-project"),
    path("projects/<int:project_id>/members/", views.MemberListView.as_view(), name="api-members"),
    path("projects/<int:project_id>/members/<int:user_id>/", views.MemberDetailView.as_view(), name="api-member"),
    path("projects/<int:project_id>/claim/", views.ClaimView.as_view(), name="api-claim"),
    path("projects/<int:project_id>/tasks/", views.TaskListView.as_view(), name="api-tasks"),
    path("projects/<int:project_id>/tasks/<int:task_id>/", views.TaskDetailView.as_view(), name="api-task"),
    path("projects/<int:project_id>/judgements/", views.JudgementListView.as_view(), name="api-judgements"),
    path("projects/<int:project_id>/imports/", views.ImportListView.as_view(), name="api-imports"),
    path("projects/<int:project_id>/imports/<int:job_id>/", views.ImportDetailView.as_view(), name="api-import"),
    path(
        "projects/<int:project_id>/imports/<int:job_id>/cancel/",
        views.ImportCancelView.as_view(),
        name="api-import-cancel",
    ),
    path("assignments/<int:assignment_id>/submit/", views.SubmitView.as_view(), name="api-submit"),
    path("assignments/<int:assignment_id>/skip/", views.SkipView.as_view(), name="api-skip"),
    path("assignments/<int:assignment_id>/release/", views.ReleaseView.as_view(), name="api-release"),
    path("judgements/<int:judgement_id>/amend/", views.JudgementAmendView.as_view(), name="api-judgement-amend"),
    path("projects/<int:project_id>/agreement/", report_views.AgreementReportView.as_view(), name="api-agreement"),
    path(
        "projects/<int:project_id>/agreement/trend/",
        report_views.TrendView.as_view(),
        name="api-agreement-trend",
    ),
]
