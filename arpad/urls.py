from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerSplitView

# Each app's api/ package is its REST surface; they sit side by side under /api/v1/.
urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", include("annotation.api.urls")),
    path("api/v1/", include("exports.api.urls")),
    path("api/v1/", include("rewardmodel.api.urls")),
    path("api/v1/", include("rlloop.api.urls")),
    path("api/v1/", include("jobs.api.urls")),
    path("api/v1/", include("accounts.api.urls")),
    path("api/v1/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    # Swagger UI with the app's header, and no inline style for the CSP to refuse (frontend/api_docs.html).
    path(
        "api/v1/docs/",
        SpectacularSwaggerSplitView.as_view(url_name="api-schema", template_name="frontend/api_docs.html"),
        name="api-docs",
    ),
    path("api/v1/redoc/", SpectacularRedocView.as_view(url_name="api-schema"), name="api-redoc"),
    # Invitation links and the API tokens page (the login page is frontend's).
    path("", include("accounts.urls")),
    path("", include("frontend.urls")),
]

# Refusals Django makes before a view runs answer in the API's shape under /api/.
handler400 = "arpad.http.bad_request"
handler404 = "arpad.http.page_not_found"
handler500 = "arpad.http.server_error"
