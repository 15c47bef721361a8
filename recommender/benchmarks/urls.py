"""The endpoint benchmark's URLconf: the project's URLs plus the naive baseline.

Served only by the gunicorn the endpoint benchmark starts (``DJANGO_ROOT_URLCONF``,
see ``recommender.benchmarks.endpoint``); ``config.urls`` knows nothing of it, so
production never exposes the naive endpoint.
"""

from django.urls import path

from config import urls as project_urls
from recommender.benchmarks.naive import NaiveRecommendationApi

urlpatterns = [
    *project_urls.urlpatterns,
    path(
        "api/v1/bench/naive-recommendations/",
        NaiveRecommendationApi.as_view(),
        name="bench-naive-recommendations",
    ),
]

handler404 = project_urls.handler404
handler500 = project_urls.handler500
