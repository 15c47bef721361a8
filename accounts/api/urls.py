from django.urls import path

from accounts.api import views

urlpatterns = [
    path("accounts/", views.AccountCreateApi.as_view(), name="account-create"),
    path("accounts/me/", views.AccountMeApi.as_view(), name="account-me"),
    path(
        "accounts/me/export/",
        views.AccountExportApi.as_view(),
        name="account-export",
    ),
    path("auth/token/", views.TokenCreateApi.as_view(), name="token-create"),
    path("profiles/me/", views.ProfileMeApi.as_view(), name="profile-me"),
    path(
        "profiles/<int:user_id>/",
        views.ProfileDetailApi.as_view(),
        name="profile-detail",
    ),
]
