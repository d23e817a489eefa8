"""Named API token routes, mounted at /api/v1/ by ``arpad.urls`` (beside ``auth/token/``)."""

from django.urls import path

from accounts.api import views

urlpatterns = [
    path("auth/tokens/", views.ApiTokenListView.as_view(), name="api-auth-tokens"),
    path("auth/tokens/<int:token_id>/", views.ApiTokenDetailView.as_view(), name="api-auth-token"),
]
