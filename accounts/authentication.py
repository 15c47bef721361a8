"""Token authentication with an end: a token stops working after its lifetime
(``KINDRED["AUTH_TOKEN_TTL_HOURS"]``) and when its member's password changes."""

from django.utils.translation import gettext_lazy as _
from rest_framework import exceptions
from rest_framework.authentication import TokenAuthentication

from accounts.selectors import auth_token_get, auth_token_is_current


class ExpiringTokenAuthentication(TokenAuthentication):
    def authenticate_credentials(self, key):
        # DRF's checks and messages, on one plain query (accounts.selectors).
        token = auth_token_get(key=key)
        if token is None:
            raise exceptions.AuthenticationFailed(_("Invalid token."))
        if not token.user.is_active:
            raise exceptions.AuthenticationFailed(_("User inactive or deleted."))
        if not auth_token_is_current(token=token):
            # Gone for good: the member logs in again for a new one.
            token.delete()
            raise exceptions.AuthenticationFailed(
                "Token expired or replaced; log in again."
            )
        return token.user, token
