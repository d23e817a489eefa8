"""Policy and round routes, mounted at /api/v1/ by ``arpad.urls``."""

from django.urls import path

from rlloop.api import cycles, views

_POLICIES = "projects/<int:project_id>/policies/"
_ROUNDS = "projects/<int:project_id>/rl-rounds/"
_SAMPLING = "projects/<int:project_id>/sampling/"

urlpatterns = [
    path(_POLICIES, views.PolicyListView.as_view(), name="api-policies"),
    path(f"{_POLICIES}checkpoints/", views.CheckpointListView.as_view(), name="api-policy-checkpoints"),
    path(f"{_POLICIES}<int:number>/", views.PolicyDetailView.as_view(), name="api-policy"),
    path(f"{_POLICIES}<int:number>/reference/", views.PolicyReferenceView.as_view(), name="api-policy-reference"),
    path(_ROUNDS, views.RoundListView.as_view(), name="api-rl-rounds"),
    path(f"{_ROUNDS}<int:round_id>/", views.RoundDetailView.as_view(), name="api-rl-round"),
    path(f"{_ROUNDS}<int:round_id>/cancel/", views.RoundCancelView.as_view(), name="api-rl-round-cancel"),
    path(_SAMPLING, views.SamplingListView.as_view(), name="api-sampling-jobs"),
    path(f"{_SAMPLING}<int:job_id>/", views.SamplingDetailView.as_view(), name="api-sampling-job"),
    path(f"{_SAMPLING}<int:job_id>/cancel/", views.SamplingCancelView.as_view(), name="api-sampling-job-cancel"),
    path("projects/<int:project_id>/leaderboard/", views.LeaderboardView.as_view(), name="api-leaderboard"),
    path(
        "projects/<int:project_id>/leaderboard/proxy-vs-human/",
        views.ProxyVsHumanView.as_view(),
        name="api-proxy-vs-human",
    ),
    path("projects/<int:project_id>/cycles/", cycles.CycleListView.as_view(), name="api-cycles"),
    path("projects/<int:project_id>/cycles/<int:cycle_id>/", cycles.CycleDetailView.as_view(), name="api-cycle"),
    path(
        "projects/<int:project_id>/cycles/<int:cycle_id>/cancel/",
        cycles.CycleCancelView.as_view(),
        name="api-cycle-cancel",
    ),
    path("projects/<int:project_id>/cycles/rule/", cycles.RuleView.as_view(), name="api-cycle-rule"),
]
