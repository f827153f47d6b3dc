"""JWT access tokens of an external OpenID Connect identity provider (`auth.oidc`).

A token is accepted when its signature verifies with a key of the provider's JWKS (chosen by the token's
`kid`, with an algorithm of `auth.oidc.algorithms`, which admits neither "none" nor HS*), its `iss` and
`aud` are the configured ones, it has an `exp` that has not passed and its `nbf` and `iat`, if any, are
not in the future (all with `leeway_s` of clock skew), and its `user_claim` names an existing Lomas user.

Blocking (the JWKS is fetched over HTTP when the cache is cold): call `authenticate` off the event loop.
Refusals raise InvalidJWTError, whose message says why and never contains the token.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import jwt

from lomas.server.config import OIDCSettings

logger = logging.getLogger(__name__)

JWKS_TIMEOUT_S = 10.0  # connect and read timeout of one JWKS fetch
REQUIRED_CLAIMS = ["exp", "iss", "aud"]


class InvalidJWTError(Exception):
    """A presented JWT identifies nobody. The message says why, never carries the token."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"JWT refused: {reason}")
        self.reason = reason


class OIDCValidator:
    """Checks the access tokens of one identity provider and maps them to Lomas user names."""

    def __init__(self, settings: OIDCSettings, user_exists: Callable[[str], bool]) -> None:
        self._settings = settings
        self._user_exists = user_exists
        # The JWK set is cached for `jwks_cache_s` and refetched after it. PyJWT's per-kid key cache
        # (`cache_keys=True`) is left off: it never expires, so a key the provider withdrew from its JWKS
        # would stay trusted. An unknown kid forces at most one refetch per 30 s (PyJWT's cooldown).
        self._jwks = jwt.PyJWKClient(
            str(settings.jwks_url),
            cache_keys=False,
            cache_jwk_set=True,
            lifespan=settings.jwks_cache_s,
            timeout=JWKS_TIMEOUT_S,
        )

    def authenticate(self, token: str) -> str:
        """The Lomas user name `token` identifies, or InvalidJWTError saying why not."""
        settings = self._settings
        try:
            key = self._jwks.get_signing_key_from_jwt(token)
            claims = jwt.decode(
                token,
                key,
                algorithms=settings.algorithms,
                audience=settings.audience,
                issuer=settings.issuer,
                leeway=settings.leeway_s,
                options={"require": REQUIRED_CLAIMS, "verify_signature": True},
            )
        except jwt.PyJWTError as error:
            raise InvalidJWTError(f"{type(error).__name__}: {error}") from None
        except Exception as error:  # noqa: BLE001 - a token or JWKS the library did not foresee: a 401, not a 500
            logger.warning("unexpected %s while checking a JWT", type(error).__name__)
            raise InvalidJWTError(f"unexpected {type(error).__name__}") from None
        user_name = claims.get(settings.user_claim)
        if not isinstance(user_name, str) or not user_name.strip():
            raise InvalidJWTError(f"claim {settings.user_claim!r} missing or not a non-empty string")
        if not self._user_exists(user_name):
            raise InvalidJWTError(f"claim {settings.user_claim!r} names no Lomas user ({user_name!r})")
        return user_name
