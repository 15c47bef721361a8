"""Token authentication with an end: a token stops working after its lifetime
(``KINDRED["AUTH_TOKEN_TTL_HOURS"]``) and when its member's password changes."""

from rest_framework import exceptions
from rest_framework.authentication import TokenAuthentication

from accounts.selectors import auth_token_is_current


class ExpiringTokenAuthentication(TokenAuthentication):
    def authenticate_credentials(self, key):
        user, token = super().authenticate_credentials(key)
        if not auth_token_is_current(token=token):
            # Gone for good: the member logs in again for a new one.
            token.delete()
            raise exceptions.AuthenticationFailed(
                "Token expired or replaced; log in again."
            )
        return user, token
