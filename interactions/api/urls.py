from django.urls import path

from interactions.api import views

urlpatterns = [
    path(
        "interactions/",
        views.InteractionListCreateApi.as_view(),
        name="interaction-list",
    ),
    path("matches/", views.MatchListApi.as_view(), name="match-list"),
]
