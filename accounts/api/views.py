import json
from collections.abc import Iterator

from django.core.serializers.json import DjangoJSONEncoder
from django.http import StreamingHttpResponse
from django.utils import timezone
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.exceptions import NotAuthenticated, NotFound
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.api.serializers import (
    AccountCreateInputSerializer,
    AccountDeleteInputSerializer,
    AccountExportOutputSerializer,
    AccountOutputSerializer,
    ExportAccountSerializer,
    ExportProfileSerializer,
    OwnProfileOutputSerializer,
    PreferencesOutputSerializer,
    ProfileUpdateInputSerializer,
    PublicProfileOutputSerializer,
    TokenCreateInputSerializer,
    TokenOutputSerializer,
)
from accounts.authentication import ExpiringTokenAuthentication
from accounts.selectors import (
    AccountExport,
    account_export,
    profile_get_own,
    profile_get_public,
)
from accounts.services import (
    account_create,
    account_delete,
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


class AccountMeApi(APIView):
    # Checking a password is what log-in does: the same rate limit (per member
    # here), so a stolen token cannot be used to guess the password quickly.
    throttle_classes = [CacheTolerantScopedRateThrottle]
    throttle_scope = "token"

    @extend_schema(
        request=AccountDeleteInputSerializer,
        responses={204: None},
        description="Delete the account for good, confirmed by the password: the "
        "profile, preferences, interactions given and received, matches, "
        "impressions, features, embeddings and tokens go; nobody is shown the "
        "member from then on. 400 for a wrong or missing password (nothing "
        "deleted), 403 for a staff account, 401 once the account is gone.",
    )
    def delete(self, request):
        serializer = AccountDeleteInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        account_delete(user=request.user, **serializer.validated_data)
        return Response(status=status.HTTP_204_NO_CONTENT)


class AccountExportApi(APIView):
    @extend_schema(
        responses={200: AccountExportOutputSerializer},
        description="Everything Kindred stores about the signed-in member, as one "
        "JSON document (streamed).",
    )
    def get(self, request):
        export = account_export(user=request.user)
        response = StreamingHttpResponse(
            _export_json(export), content_type="application/json"
        )
        response["Content-Disposition"] = 'attachment; filename="kindred-export.json"'
        return response


EXPORT_ROWS_PER_CHUNK = 500


def _export_json(export: AccountExport) -> Iterator[bytes]:
    """The export as JSON text, written as its rows are read: the head (account,
    profile, preferences) whole, then each list ``EXPORT_ROWS_PER_CHUNK`` rows at a
    time."""
    encode = DjangoJSONEncoder(separators=(",", ":")).encode
    head = {
        "exported_at": timezone.now(),
        "account": ExportAccountSerializer(export.account).data,
        "profile": ExportProfileSerializer(export.profile).data
        if export.profile is not None
        else None,
        "preferences": PreferencesOutputSerializer(export.preferences).data
        if export.preferences is not None
        else None,
    }
    yield encode(head)[:-1].encode()  # the object stays open for the lists
    for name in ("interactions", "matches", "impressions", "features", "embeddings"):
        yield f",{json.dumps(name)}:[".encode()
        chunk: list[str] = []
        separator = ""
        for row in getattr(export, name):
            chunk.append(separator + encode(row))
            separator = ","
            if len(chunk) == EXPORT_ROWS_PER_CHUNK:
                yield "".join(chunk).encode()
                chunk = []
        yield ("".join(chunk) + "]").encode()
    yield b"}"


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
