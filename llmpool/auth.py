"""Bearer tokens for LLM endpoints, exactly as the TT-Studio agent sends them.

vLLM compares the bearer string byte for byte with its VLLM_API_KEY, which TT-Studio sets to the
same PyJWT encoding, so the payload's key order and PyJWT's own encoding must not change.
"""

from __future__ import annotations

from functools import lru_cache

import jwt

from llmpool.settings import Settings

__all__ = ["TT_STUDIO_JWT_PAYLOAD", "tt_studio_jwt", "container_bearer_token", "cloud_bearer_token"]

TT_STUDIO_JWT_PAYLOAD = {"team_id": "tenstorrent", "token_id": "debug-test"}


@lru_cache(maxsize=4)
def tt_studio_jwt(secret: str) -> str:
    """PyJWT's HS256 encoding of the TT-Studio payload, no expiry, as the containers expect.

    Cached: the token has no expiry, so it is the same for every call with the same secret.
    """
    return jwt.encode(dict(TT_STUDIO_JWT_PAYLOAD), secret, algorithm="HS256")


def container_bearer_token(settings: Settings) -> str | None:
    """The bearer for local containers: the cloud token when set, else the JWT, else none."""
    if settings.cloud_chat_ui_auth_token is not None:
        return settings.cloud_chat_ui_auth_token.get_secret_value()
    if settings.jwt_secret is not None:
        return tt_studio_jwt(settings.jwt_secret.get_secret_value())
    return None


def cloud_bearer_token(settings: Settings) -> str | None:
    """The bearer for the cloud endpoint."""
    token = settings.cloud_chat_ui_auth_token
    return token.get_secret_value() if token is not None else None
