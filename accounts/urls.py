"""Account pages, mounted at the root by ``arpad.urls`` (beside ``/accounts/login/``)."""

from django.urls import path

from accounts import views

urlpatterns = [
    # The link's key is a random string; its digest finds the invitation.
    path("accounts/invite/<str:key>/", views.invite_accept, name="account-invite"),
    path("accounts/tokens/", views.api_tokens, name="account-tokens"),
]
