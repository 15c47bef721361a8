from django.urls import path

from recommender.api import views

urlpatterns = [
    path(
        "recommendations/",
        views.RecommendationListApi.as_view(),
        name="recommendation-list",
    ),
]
