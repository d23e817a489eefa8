"""API v1 routes, mounted at /api/v1/. The URL shapes are a contract with the UI and the benchmark."""

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
    path("assignments/<int:assignment_id>/submit/", views.SubmitView.as_view(), name="api-submit"),
    path("assignments/<int:assignment_id>/skip/", views.SkipView.as_view(), name="api-skip"),
    path("projects/<int:project_id>/agreement/", report_views.AgreementReportView.as_view(), name="api-agreement"),
]

# Export snapshots (the exports app); kept apart so that this block can be appended alone.
from annotation.api import export_views  # noqa: E402

urlpatterns += [
    path("projects/<int:project_id>/exports/", export_views.ExportListView.as_view(), name="api-exports"),
    path(
        "projects/<int:project_id>/exports/<int:export_id>/", export_views.ExportDetailView.as_view(), name="api-export"
    ),
    path(
        "projects/<int:project_id>/exports/<int:export_id>/files/<path:name>",
        export_views.ExportFileView.as_view(),
        name="api-export-file",
    ),
    path(
        "projects/<int:project_id>/exports/<int:export_id>/cancel/",
        export_views.ExportCancelView.as_view(),
        name="api-export-cancel",
    ),
]

# Reward-model runs, versions and scoring (the rewardmodel app).
from django.urls import include  # noqa: E402

urlpatterns += [path("", include("rewardmodel.api.urls"))]

# Dashboard data: agreement trend and the export threshold preview (annotation/api/dashboard_views.py).
from annotation.api import dashboard_views  # noqa: E402

urlpatterns += [
    path(
        "projects/<int:project_id>/agreement/trend/",
        dashboard_views.TrendView.as_view(),
        name="api-agreement-trend",
    ),
    path(
        "projects/<int:project_id>/exports/preview/",
        dashboard_views.ExportPreviewView.as_view(),
        name="api-export-preview",
    ),
]
