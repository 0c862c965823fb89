"""Bearer-JWT auth on the shim: one ASGI middleware in front of every route, deny by default.

A route is public only if PUBLIC lists it; a route that changes the pool needs the admin scope
(ADMIN lists them). Routes reach the caller through `get_principal` (None while the API is open)
and decide ownership of threads and jobs with `may_read` / `owner_of`.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from api.jwt_verify import ADMIN_SCOPE, InvalidToken, Principal, TokenVerifier, verifier_for
from llmpool.settings import Settings, get_settings

__all__ = ["BearerAuth", "get_principal", "owner_of", "may_read", "may_manage", "PUBLIC", "ADMIN"]

# (method, path): the liveness page and the scrapers' routes answer without a token.
PUBLIC = frozenset({("GET", "/"), ("HEAD", "/"), ("GET", "/health"), ("HEAD", "/health"),
                    ("GET", "/metrics"), ("HEAD", "/metrics")})
# Routes that change the pool for everyone (cancelling another subject's job is checked by its route).
ADMIN = frozenset({("POST", "/refresh"), ("POST", "/select_model"), ("DELETE", "/select_model"),
                   ("POST", "/refresh_config")})
PRINCIPAL = "principal"  # where the middleware leaves the caller, in the request's state


def _challenge(error: str, description: str, **extra: str) -> str:
    params = {"realm": "llmpool", "error": error, "error_description": description, **extra}
    return "Bearer " + ", ".join(f'{k}="{v}"' for k, v in params.items())


def _deny(path: str, status: int, reason: str, *, error: str = "invalid_token", **extra: str) -> JSONResponse:
    """401/403 in the API's usual error JSON (OpenAI's shape under /v1), with the Bearer challenge."""
    kind = "unauthorized" if status == 401 else "forbidden"
    body: dict[str, Any]
    if path.startswith("/v1/"):
        code = "invalid_api_key" if status == 401 else "insufficient_scope"
        body = {"error": {"message": reason, "type": "invalid_request_error", "param": None, "code": code}}
    else:
        body = {"status": "error", "error": {"type": kind, "message": reason}, "message": reason}
    return JSONResponse(body, status_code=status, headers={"WWW-Authenticate": _challenge(error, reason, **extra)})


def _bearer(scope: Scope) -> str:
    """The token of the Authorization header; InvalidToken when there is none."""
    values = [v for k, v in scope.get("headers", []) if k == b"authorization"]
    if not values:
        raise InvalidToken("no bearer token: send Authorization: Bearer <jwt>")
    kind, _, token = values[0].decode("latin-1").strip().partition(" ")
    if kind.lower() != "bearer" or not token.strip():
        raise InvalidToken("the Authorization header must be 'Bearer <jwt>'")
    return token.strip()


class BearerAuth:
    """Checks every HTTP request but PUBLIC ones against the verifier the app's settings configure."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._cached: tuple[Settings | None, TokenVerifier | None] = (None, None)

    def _verifier(self, scope: Scope) -> TokenVerifier | None:
        # The settings are the app's current ones (POST /refresh_config replaces them).
        state = getattr(scope["app"].state, "llmpool", None)
        settings: Settings = state.settings if state is not None else get_settings()
        if self._cached[0] is not settings:
            self._cached = (settings, verifier_for(settings))
        return self._cached[1]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        verifier = self._verifier(scope)
        method, path = scope["method"], scope["path"]
        if verifier is not None and (method, path) not in PUBLIC:
            try:
                principal = verifier.verify(_bearer(scope))
            except InvalidToken as exc:
                await _deny(path, 401, str(exc))(scope, receive, send)
                return
            if (method, path) in ADMIN and not principal.is_admin:
                reason = f"this route changes the pool: the token needs the scope {ADMIN_SCOPE}"
                await _deny(path, 403, reason, error="insufficient_scope", scope=ADMIN_SCOPE)(scope, receive, send)
                return
            scope.setdefault("state", {})[PRINCIPAL] = principal
        await self.app(scope, receive, send)


def get_principal(request: Request) -> Principal | None:
    """The caller's principal, or None while the API is open (no key configured)."""
    principal: Principal | None = getattr(request.state, PRINCIPAL, None)
    return principal


def owner_of(principal: Principal | None) -> str | None:
    """What a new job or thread records as its owner: the token's sub (None while the API is open)."""
    return principal.subject if principal else None


def may_read(principal: Principal | None, owner: str | None) -> bool:
    """Whether the caller may see a job owned by `owner` (anyone while the API is open)."""
    return principal is None or principal.is_admin or owner == principal.subject


def may_manage(principal: Principal | None, owner: str | None) -> bool:
    """Whether the caller may cancel a job owned by `owner`: its owner, or an admin."""
    return may_read(principal, owner)
