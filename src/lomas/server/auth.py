"""Who is calling. In this version only the 0.4 `user-name` header exists, trusted in open mode."""

from __future__ import annotations

from fastapi import Request

from lomas.core.errors import UnauthorizedAccessError

USER_NAME_HEADER = "user-name"


class AuthenticationError(UnauthorizedAccessError):
    status_code = 401


def caller_from_request(request: Request, open_mode: bool) -> str:
    """The Lomas user name of the caller, or an error saying how to identify."""
    if not open_mode:
        raise AuthenticationError(
            "Authentication required. This server does not accept the unauthenticated 'user-name' "
            "header; ask the administrator for access."
        )
    user_name = request.headers.get(USER_NAME_HEADER, "").strip()
    if not user_name:
        raise AuthenticationError(f"Missing '{USER_NAME_HEADER}' header: say who you are.")
    return user_name
