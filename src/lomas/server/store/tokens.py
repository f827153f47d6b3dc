"""API tokens: issued to a user by an administrator, shown once, stored only as a SHA-256 hash,
expiring and revocable. `authenticate` turns a presented token into the user it identifies.

A token is `lomas_` + 32 random bytes (URL-safe base64): guessing one is hopeless, so an unsalted
SHA-256 is enough to make a stolen copy of the store useless for calling the server, and lets a
presented token be found by its hash in one indexed lookup.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import NamedTuple

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from lomas.server.store.models import Token, User, utcnow
from lomas.server.store.service import NotFoundError, StoreError

TOKEN_PREFIX = "lomas_"
MAX_LABEL_LENGTH = 256
# `last_used_at` is written at most this often per token, so that authenticating is not a write per request.
LAST_USED_RESOLUTION = timedelta(minutes=1)


class TokenRefusal(StrEnum):
    """Why a token was refused: for the server log only, the caller always sees the same message."""

    UNKNOWN = "unknown"
    EXPIRED = "expired"
    REVOKED = "revoked"


class InvalidTokenError(Exception):
    """A presented token identifies nobody. Never carries the token itself."""

    def __init__(self, reason: TokenRefusal, token_id: int | None = None) -> None:
        super().__init__(f"token refused: {reason}" + (f" (token {token_id})" if token_id is not None else ""))
        self.reason = reason
        self.token_id = token_id


class IssuedToken(NamedTuple):
    token_id: int
    plaintext: str  # shown to the administrator once; the store keeps only its hash


@dataclass(frozen=True)
class TokenRecord:
    """What may be shown of a token: never its value nor its hash."""

    id: int
    user_name: str
    label: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None

    def status(self, now: datetime | None = None) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= (now or utcnow()):
            return "expired"
        return "active"


def hash_token(plaintext: str) -> str:
    return hashlib.sha256(plaintext.encode()).hexdigest()


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


class TokenStore:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions

    def issue_token(self, user_name: str, label: str = "", expires_at: datetime | None = None) -> IssuedToken:
        """A new token for `user_name`, valid until `expires_at` (None: until revoked)."""
        if len(label) > MAX_LABEL_LENGTH:
            raise StoreError(f"A token label has at most {MAX_LABEL_LENGTH} characters.")
        if expires_at is not None:
            if expires_at.tzinfo is None:
                raise StoreError("A token expiry needs a time zone.")
            if expires_at <= utcnow():
                raise StoreError("A token expiry must be in the future.")
        plaintext = new_token()
        with self._sessions.begin() as session:
            user = session.scalars(select(User).where(User.name == user_name)).one_or_none()
            if user is None:
                raise NotFoundError(f"No user named {user_name!r}.")
            token = Token(user_id=user.id, label=label, token_hash=hash_token(plaintext), expires_at=expires_at)
            session.add(token)
            session.flush()
            return IssuedToken(token.id, plaintext)

    def list_tokens(self, user_name: str | None = None) -> list[TokenRecord]:
        """Tokens, oldest first (of one user with `user_name`, who must exist)."""
        with self._sessions() as session:
            statement = select(Token, User.name).join(User, Token.user_id == User.id).order_by(Token.id)
            if user_name is not None:
                if session.scalar(select(User.id).where(User.name == user_name)) is None:
                    raise NotFoundError(f"No user named {user_name!r}.")
                statement = statement.where(User.name == user_name)
            return [
                TokenRecord(t.id, name, t.label, t.created_at, t.expires_at, t.revoked_at, t.last_used_at)
                for t, name in session.execute(statement).all()
            ]

    def revoke_token(self, token_id: int) -> TokenRecord:
        """Revoke a token for good (it cannot be brought back: issue a new one)."""
        with self._sessions.begin() as session:
            row = session.execute(
                select(Token, User.name).join(User, Token.user_id == User.id).where(Token.id == token_id)
            ).one_or_none()
            if row is None:
                raise NotFoundError(f"No token with id {token_id}.")
            token, name = row
            if token.revoked_at is not None:
                raise StoreError(f"Token {token_id} of {name!r} is already revoked.")
            token.revoked_at = utcnow()
            return TokenRecord(
                token.id, name, token.label, token.created_at, token.expires_at, token.revoked_at, token.last_used_at
            )

    def authenticate(self, plaintext: str) -> str:
        """The name of the user `plaintext` identifies, or InvalidTokenError saying why not."""
        digest = hash_token(plaintext)
        now = utcnow()
        with self._sessions.begin() as session:
            row = session.execute(
                select(Token, User.name).join(User, Token.user_id == User.id).where(Token.token_hash == digest)
            ).one_or_none()
            # The lookup found the hash already; comparing in constant time costs nothing and keeps any
            # comparison of secrets in this module free of early exits.
            if row is None or not hmac.compare_digest(row[0].token_hash, digest):
                raise InvalidTokenError(TokenRefusal.UNKNOWN)
            token, user_name = row
            if token.revoked_at is not None:
                raise InvalidTokenError(TokenRefusal.REVOKED, token.id)
            if token.expires_at is not None and token.expires_at <= now:
                raise InvalidTokenError(TokenRefusal.EXPIRED, token.id)
            if token.last_used_at is None or now - token.last_used_at >= LAST_USED_RESOLUTION:
                token.last_used_at = now
            return str(user_name)
