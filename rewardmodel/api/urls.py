"""Reward-model routes, mounted at /api/v1/ by ``arpad.urls``."""

from django.urls import path

from rewardmodel.api import views

_BASE = "projects/<int:project_id>/reward-models/"

urlpatterns = [
    path(_BASE, views.VersionListView.as_view(), name="api-rm-versions"),
    path(f"{_BASE}runs/", views.RunListView.as_view(), name="api-rm-runs"),
    path(f"{_BASE}bases/", views.BaseModelListView.as_view(), name="api-rm-bases"),
    path(f"{_BASE}runs/<int:run_id>/", views.RunDetailView.as_view(), name="api-rm-run"),
    path(f"{_BASE}runs/<int:run_id>/cancel/", views.RunCancelView.as_view(), name="api-rm-run-cancel"),
    path(f"{_BASE}compare/", views.VersionCompareView.as_view(), name="api-rm-compare"),
    path(f"{_BASE}active/score/", views.VersionScoreView.as_view(), name="api-rm-score-active"),
    path(f"{_BASE}<int:number>/", views.VersionDetailView.as_view(), name="api-rm-version"),
    path(f"{_BASE}<int:number>/activate/", views.VersionActivateView.as_view(), name="api-rm-activate"),
    path(f"{_BASE}<int:number>/score/", views.VersionScoreView.as_view(), name="api-rm-score"),
    path(f"{_BASE}<int:number>/archive/", views.VersionArchiveView.as_view(), name="api-rm-archive"),
]
