"""Who is calling: an API token (`Authorization: Bearer`), or in open mode the 0.4 `user-name` header.

A Bearer value that starts with `lomas_` is an API token of the store; any other is, when `auth.oidc` is
configured, a JWT access token of the identity provider (see `lomas.server.oidc`; the application puts
its OIDCValidator in `app.state.oidc`), and is refused otherwise.

A token, when one is presented, always decides (also in open mode): a request that carries a wrong
token is refused rather than served under the `user-name` it may also carry. Every refused token gets
the same answer, whatever the reason (unknown, expired, revoked; for a JWT also bad issuer, audience or
signature, unknown user, JWKS unreachable...); the reason goes to the server log, with an API token's id,
never the token.
"""

from __future__ import annotations

import logging

from fastapi import Request
from fastapi.concurrency import run_in_threadpool

from lomas.core.errors import UnauthorizedAccessError
from lomas.server.oidc import InvalidJWTError, OIDCValidator
from lomas.server.store.tokens import TOKEN_PREFIX, InvalidTokenError, TokenStore

logger = logging.getLogger(__name__)

USER_NAME_HEADER = "user-name"
INVALID_TOKEN_MESSAGE = "Invalid or expired token"
HOW_TO_AUTHENTICATE = (
    "send your API token in the header 'Authorization: Bearer <token>' (the Lomas client takes it as "
    "Client(..., token=...) or from the LOMAS_TOKEN environment variable); your administrator issues tokens."
)


class AuthenticationError(UnauthorizedAccessError):
    """No identity, or a refused one: 401 with a `WWW-Authenticate` challenge (RFC 6750)."""

    status_code = 401

    def __init__(self, message: str, invalid_token: bool = False) -> None:
        super().__init__(message)
        challenge = 'Bearer realm="lomas"' + (', error="invalid_token"' if invalid_token else "")
        self.headers = {"WWW-Authenticate": challenge}


def bearer_token(request: Request) -> str | None:
    """The token of an `Authorization: Bearer` header; None without one (other schemes are ignored)."""
    scheme, _, token = request.headers.get("authorization", "").strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


async def identify(request: Request, open_mode: bool, tokens: TokenStore) -> str:
    """The Lomas user name of the caller, or an AuthenticationError saying how to identify."""
    token = bearer_token(request)
    if token is not None:
        oidc: OIDCValidator | None = getattr(request.app.state, "oidc", None)
        try:
            if token.startswith(TOKEN_PREFIX):
                return await run_in_threadpool(tokens.authenticate, token)
            if oidc is None:
                raise InvalidJWTError("not an API token, and OIDC is not configured")
            return await run_in_threadpool(oidc.authenticate, token)
        except (InvalidTokenError, InvalidJWTError) as refusal:
            logger.info("%s %s refused: %s", request.method, request.url.path, refusal)
            raise AuthenticationError(INVALID_TOKEN_MESSAGE, invalid_token=True) from None
    if not open_mode:
        ignored = " (this server does not accept the unauthenticated 'user-name' header)"
        hint = ignored if USER_NAME_HEADER in request.headers else ""
        raise AuthenticationError(f"Authentication required{hint}: {HOW_TO_AUTHENTICATE}")
    user_name = request.headers.get(USER_NAME_HEADER, "").strip()
    if not user_name:
        raise AuthenticationError(
            f"Missing identity: send the '{USER_NAME_HEADER}' header (open mode) or an API token in "
            "'Authorization: Bearer <token>'."
        )
    return user_name
