from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.exceptions import NotAuthenticated, NotFound
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.api.serializers import (
    AccountCreateInputSerializer,
    AccountOutputSerializer,
    OwnProfileOutputSerializer,
    ProfileUpdateInputSerializer,
    PublicProfileOutputSerializer,
    TokenCreateInputSerializer,
    TokenOutputSerializer,
)
from accounts.authentication import ExpiringTokenAuthentication
from accounts.selectors import profile_get_own, profile_get_public
from accounts.services import (
    account_create,
    auth_token_obtain,
    auth_token_revoke,
    profile_touch,
    profile_update,
)
from config.api import CacheTolerantScopedRateThrottle


class AccountCreateApi(APIView):
    # Anonymous endpoints: no session authentication, hence no CSRF check either.
    authentication_classes = []
    permission_classes = [AllowAny]
    throttle_classes = [CacheTolerantScopedRateThrottle]
    throttle_scope = "signup"

    @extend_schema(
        request=AccountCreateInputSerializer,
        responses={201: AccountOutputSerializer},
        auth=[],
    )
    def post(self, request):
        serializer = AccountCreateInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        user = account_create(**serializer.validated_data)
        account = {"id": user.pk, "username": user.username, "profile": user.profile}
        return Response(
            AccountOutputSerializer(account).data, status=status.HTTP_201_CREATED
        )


class TokenCreateApi(APIView):
    """``POST``: log in (anonymous, throttled). ``DELETE``: log out, with the token
    being revoked (authenticated by that token, checked in the handler because the
    log-in must not be refused for a stale ``Authorization`` header)."""

    authentication_classes = []
    permission_classes = [AllowAny]
    throttle_classes = [CacheTolerantScopedRateThrottle]
    throttle_scope = "token"

    def get_throttles(self):
        # Log-in attempts are rate limited; logging out is not.
        return super().get_throttles() if self.request.method == "POST" else []

    def get_authenticate_header(self, request):
        # A refused log-out is a 401 with "WWW-Authenticate: Token", not a 403.
        return ExpiringTokenAuthentication().authenticate_header(request)

    @extend_schema(
        request=TokenCreateInputSerializer,
        responses={200: TokenOutputSerializer},
        auth=[],
    )
    def post(self, request):
        serializer = TokenCreateInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        token = auth_token_obtain(**serializer.validated_data)
        return Response(TokenOutputSerializer({"token": token}).data)

    @extend_schema(
        request=None,
        responses={204: None},
        auth=[{"tokenAuth": []}],
        description="Log out: the token used for this call stops working.",
    )
    def delete(self, request):
        authenticated = ExpiringTokenAuthentication().authenticate(request)
        if authenticated is None:
            raise NotAuthenticated()
        auth_token_revoke(user=authenticated[0])
        return Response(status=status.HTTP_204_NO_CONTENT)


class ProfileMeApi(APIView):
    @extend_schema(responses={200: OwnProfileOutputSerializer})
    def get(self, request):
        profile_touch(user_id=request.user.pk)
        profile = profile_get_own(user=request.user)
        if profile is None:
            raise NotFound("This account has no member profile.")
        return Response(OwnProfileOutputSerializer(profile).data)

    @extend_schema(
        request=ProfileUpdateInputSerializer,
        responses={200: OwnProfileOutputSerializer},
    )
    def patch(self, request):
        serializer = ProfileUpdateInputSerializer(data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        profile_fields = dict(serializer.validated_data)
        preferences_fields = profile_fields.pop("preferences", {})
        profile = profile_update(
            user=request.user,
            profile_fields=profile_fields,
            preferences_fields=preferences_fields,
        )
        return Response(OwnProfileOutputSerializer(profile).data)


class ProfileDetailApi(APIView):
    @extend_schema(responses={200: PublicProfileOutputSerializer})
    def get(self, request, user_id: int):
        profile = profile_get_public(viewer=request.user, user_id=user_id)
        if profile is None:
            raise NotFound("No visible member with this id.")
        return Response(PublicProfileOutputSerializer(profile).data)
