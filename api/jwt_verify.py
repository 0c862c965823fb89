"""Checks a bearer JWT against the configured key: signature, pinned algorithm, exp, aud, iss, sub."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jwt

from llmpool.jwt_keys import HS256, algorithm_for
from llmpool.settings import Settings

__all__ = ["Principal", "TokenVerifier", "InvalidToken", "verifier_for", "ADMIN_SCOPE"]

# An OAuth scope name, not a Redis key: joined so test_key_owners' key-literal check does not take it for one.
ADMIN_SCOPE = ":".join(("llmpool", "admin"))
LEEWAY = 10  # seconds of clock skew allowed on exp / nbf / iat
MAX_TOKEN_CHARS = 8192  # far above any real token: a larger header is refused before decoding
MAX_SUBJECT_CHARS = 255  # the sub becomes a job's owner, stored on its record


class InvalidToken(Exception):
    """The token does not authenticate anyone; the message is the reason, safe to show the caller."""


@dataclass(frozen=True)
class Principal:
    """Who a valid token speaks for: its `sub` and the scopes of its `scope` claim."""

    subject: str
    scopes: frozenset[str] = frozenset()

    @property
    def is_admin(self) -> bool:
        return ADMIN_SCOPE in self.scopes


def _scopes(claim: Any) -> frozenset[str]:
    """OAuth's space-separated `scope` string, or a list of scopes."""
    if isinstance(claim, str):
        return frozenset(claim.split())
    if isinstance(claim, list) and all(isinstance(s, str) for s in claim):
        return frozenset(claim)
    if claim is None:
        return frozenset()
    raise InvalidToken("the scope claim must be a space-separated string or a list of strings")


# PyJWT's exceptions, as reasons a caller can act on (never the token or the key).
_REASONS: list[tuple[type[Exception], str]] = [
    (jwt.ExpiredSignatureError, "the token has expired"),
    (jwt.MissingRequiredClaimError, "the token lacks a required claim"),
    (jwt.InvalidAudienceError, "the token's aud is not this API's audience"),
    (jwt.InvalidIssuerError, "the token's iss is not the configured issuer"),
    (jwt.ImmatureSignatureError, "the token is not valid yet (nbf / iat in the future)"),
    (jwt.InvalidAlgorithmError, "the token's algorithm is not the one this API's key allows"),
    (jwt.InvalidSignatureError, "the token's signature does not verify"),
    (jwt.DecodeError, "the token is malformed"),
]


@dataclass(frozen=True)
class TokenVerifier:
    key: str
    algorithm: str
    audience: str | None = None
    issuer: str | None = None

    def verify(self, token: str) -> Principal:
        """The principal of a valid token; InvalidToken with the reason otherwise."""
        if len(token) > MAX_TOKEN_CHARS:
            raise InvalidToken("the token is too long")
        try:
            claims = jwt.decode(
                token, self.key, algorithms=[self.algorithm], audience=self.audience, issuer=self.issuer,
                leeway=LEEWAY,
                options={"require": ["exp", "sub"], "verify_aud": self.audience is not None},
            )
        except jwt.MissingRequiredClaimError as exc:
            raise InvalidToken(f"the token has no {exc.claim} claim") from None
        except jwt.PyJWTError as exc:
            raise InvalidToken(_reason(exc)) from None
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject.strip():
            raise InvalidToken("the token's sub must be a non-empty string")
        if len(subject) > MAX_SUBJECT_CHARS:
            raise InvalidToken(f"the token's sub is longer than {MAX_SUBJECT_CHARS} characters")
        return Principal(subject, _scopes(claims.get("scope")))


def _reason(exc: Exception) -> str:
    for kind, reason in _REASONS:
        if isinstance(exc, kind):
            return reason
    return "the token is invalid"


def verifier_for(settings: Settings) -> TokenVerifier | None:
    """The verifier the settings configure, or None when the API is open."""
    common = {"audience": settings.agent_api_jwt_audience, "issuer": settings.agent_api_jwt_issuer}
    if settings.agent_api_jwt_secret is not None:
        return TokenVerifier(settings.agent_api_jwt_secret.get_secret_value(), HS256, **common)
    if settings.agent_api_jwt_public_key is not None:
        pem = settings.agent_api_jwt_public_key
        return TokenVerifier(pem, algorithm_for(pem), **common)
    return None
