"""Policy and training-round manager pages (frontend/views_rlloop.py)."""

from django.urls import path

from frontend import views_loop
from frontend import views_rlloop as views

urlpatterns = [
    path("projects/<int:project_id>/policies/", views.policy_list, name="policy-list"),
    path("projects/<int:project_id>/policies/register/", views.policy_register_view, name="policy-register"),
    path(
        "projects/<int:project_id>/policies/<int:number>/reference/",
        views.policy_reference_view,
        name="policy-reference",
    ),
    path("projects/<int:project_id>/policies/rounds/<int:round_id>/", views.policy_round_view, name="policy-round"),
    path("projects/<int:project_id>/loop/", views_loop.loop_page, name="loop"),
    path("projects/<int:project_id>/loop/cycles/", views_loop.loop_cycle_start, name="loop-cycle"),
    path(
        "projects/<int:project_id>/loop/cycles/<int:cycle_id>/cancel/",
        views_loop.loop_cycle_cancel,
        name="loop-cycle-cancel",
    ),
    path("projects/<int:project_id>/loop/rule/", views_loop.loop_rule_view, name="loop-rule"),
]
