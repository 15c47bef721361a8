from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from config.health import health_live, health_ready, health_status
from config.metrics import metrics_view

api_v1 = [
    path("", include("accounts.api.urls")),
    path("", include("interactions.api.urls")),
    path("", include("recommender.api.urls")),
]

urlpatterns = [
    path("admin/", admin.site.urls),
    path("health/live", health_live, name="health-live"),
    path("health/ready", health_ready, name="health-ready"),
    path("health", health_status, name="health"),
    path("metrics", metrics_view, name="metrics"),
    path("api/v1/", include(api_v1)),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
]

# Unknown URLs and crashes under /api/ answer in the API's JSON error shape.
handler404 = "config.api.page_not_found"
handler500 = "config.api.server_error"
