"""Reward-model manager pages (frontend/views_rewardmodel.py)."""

from django.urls import path

from frontend import views_rewardmodel as views

urlpatterns = [
    path("projects/<int:project_id>/reward-models/", views.reward_model_list, name="rewardmodel-list"),
    path("projects/<int:project_id>/reward-models/runs/<int:run_id>/", views.reward_model_run, name="rewardmodel-run"),
    path(
        "projects/<int:project_id>/reward-models/versions/<int:number>/activate/",
        views.reward_model_activate_view,
        name="rewardmodel-activate",
    ),
    path("projects/<int:project_id>/reward-models/compare/", views.reward_model_compare, name="rewardmodel-compare"),
    # The scoring playground and the retrain rule: forms of the list page.
    path("projects/<int:project_id>/reward-models/score/", views.reward_model_score_view, name="rewardmodel-score"),
    path("projects/<int:project_id>/reward-models/rule/", views.reward_model_rule_view, name="rewardmodel-rule"),
]
