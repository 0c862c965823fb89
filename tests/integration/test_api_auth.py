"""Bearer-JWT auth on the shim, in-process (httpx's ASGI transport) with a real Redis behind it.

Each refusal is a 401 (403 for a missing admin scope) with a Bearer challenge and a reason; a valid
token passes. The ownership of threads and jobs across a real worker is test_api_ownership.py.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from llmpool.settings import get_settings
from tests.asgi_app import run_against_app
from tests.processes import clean_env

SECRET = "s" * 40
AUDIENCE, ISSUER = "llmpool-api", "https://issuer.example"
ADMIN = "llmpool" + ":admin"


@pytest.fixture
def app_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, redis_url: str) -> Iterator[pytest.MonkeyPatch]:
    """Settings from the environment this test sets, not from a stray `.env`."""
    monkeypatch.chdir(tmp_path)
    for name, value in clean_env(redis_url=redis_url, agent_api_redis_connections=8).items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    yield monkeypatch
    get_settings.cache_clear()






def _claims(**overrides: Any) -> dict[str, Any]:
    claims = {"sub": "alice", "exp": int(time.time()) + 300, "aud": AUDIENCE, "iss": ISSUER}
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def _hs256(secret: str = SECRET, **overrides: Any) -> str:
    return jwt.encode(_claims(**overrides), secret, algorithm="HS256")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _forged(header: dict[str, Any], claims: dict[str, Any], key: bytes | None) -> str:
    """A token PyJWT would refuse to make: alg none, or HS256 keyed with a public key's PEM."""
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest() if key else b""
    return f"{signing_input}.{_b64(signature)}"


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _assert_refused(response: httpx.Response, status: int, fragment: str) -> None:
    assert response.status_code == status, response.text
    challenge = response.headers["WWW-Authenticate"]
    assert challenge.startswith("Bearer ") and "error=" in challenge and "error_description=" in challenge
    error = response.json()["error"]
    assert error["type"] == ("unauthorized" if status == 401 else "forbidden")
    assert fragment in error["message"]


# Headers are made when the test runs: a token minted at import would expire in a long session.
HS256_REFUSALS: list[tuple[str, Callable[[], dict[str, str]], str]] = [
    ("no token", lambda: {}, "no bearer token"),
    ("not bearer", lambda: {"Authorization": "Basic YWxpY2U6eA=="}, "Bearer <jwt>"),
    ("malformed", lambda: _bearer("not.a.jwt"), "malformed"),
    ("expired", lambda: _bearer(_hs256(exp=int(time.time()) - 120)), "expired"),
    ("no exp", lambda: _bearer(_hs256(exp=None)), "no exp claim"),
    ("no sub", lambda: _bearer(_hs256(sub=None)), "no sub claim"),
    ("wrong signature", lambda: _bearer(_hs256(secret="x" * 40)), "signature"),
    ("alg none", lambda: _bearer(_forged({"alg": "none", "typ": "JWT"}, _claims(), None)), "algorithm"),
    ("wrong aud", lambda: _bearer(_hs256(aud="someone-else")), "aud"),
    ("wrong iss", lambda: _bearer(_hs256(iss="https://evil.example")), "iss"),
]


@pytest.mark.parametrize(("case", "make_headers", "reason"), HS256_REFUSALS, ids=[c[0] for c in HS256_REFUSALS])
def test_hs256_refusals_are_401_with_a_reason(app_env: pytest.MonkeyPatch, case: str,
                                              make_headers: Callable[[], dict[str, str]], reason: str) -> None:
    headers = make_headers()
    app_env.setenv("AGENT_API_JWT_SECRET", SECRET)
    app_env.setenv("AGENT_API_JWT_AUDIENCE", AUDIENCE)
    app_env.setenv("AGENT_API_JWT_ISSUER", ISSUER)

    async def scenario(client: httpx.AsyncClient) -> None:
        for method, path in (("GET", "/jobs/some-job"), ("POST", "/poll_requests"), ("GET", "/status")):
            _assert_refused(await client.request(method, path, headers=headers, json={"message": "hi"}), 401, reason)

    run_against_app(scenario)


def test_hs256_valid_token_passes_public_routes_stay_open_admin_routes_need_the_scope(
        app_env: pytest.MonkeyPatch) -> None:
    app_env.setenv("AGENT_API_JWT_SECRET", SECRET)

    async def scenario(client: httpx.AsyncClient) -> None:
        for path in ("/", "/health", "/metrics"):  # the liveness pages and the scrapers' route need no token
            assert (await client.get(path)).status_code == 200
        assert (await client.get("/health")).json() == {"status": "ok"}
        user, admin = _bearer(_hs256(aud=None, iss=None)), _bearer(_hs256(aud=None, iss=None, scope=f"chat {ADMIN}"))
        assert (await client.get("/jobs/some-job", headers=user)).status_code == 404  # past auth: no such job
        assert (await client.get("/status", headers=user)).status_code == 200
        for method, path in (("DELETE", "/select_model"), ("POST", "/select_model?deploy_id=x"),
                             ("POST", "/refresh"), ("POST", "/refresh_config")):
            refused = await client.request(method, path, headers=user)
            _assert_refused(refused, 403, ADMIN)
            assert 'error="insufficient_scope"' in refused.headers["WWW-Authenticate"]
        assert (await client.delete("/select_model", headers=admin)).status_code == 200
        listed = _bearer(_hs256(aud=None, iss=None, scope=["chat", ADMIN]))  # a list of scopes works too
        assert (await client.delete("/select_model", headers=listed)).status_code == 200
        assert (await client.post("/select_model?deploy_id=unknown", headers=admin)).status_code == 404

    run_against_app(scenario)


def _pem(public_key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey) -> str:
    return public_key.public_bytes(serialization.Encoding.PEM,
                                   serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def test_rs256_key_confusion_and_alg_none_are_refused_a_valid_token_passes(app_env: pytest.MonkeyPatch,
                                                                           tmp_path: Path) -> None:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = _pem(private.public_key())
    key_file = tmp_path / "api-key.pem"
    key_file.write_text(pem)
    app_env.setenv("AGENT_API_JWT_PUBLIC_KEY", str(key_file))  # a path; PEM text works as well
    confused = _forged({"alg": "HS256", "typ": "JWT"}, _claims(aud=None, iss=None), pem.encode())
    unsigned = _forged({"alg": "none", "typ": "JWT"}, _claims(aud=None, iss=None), None)
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    async def scenario(client: httpx.AsyncClient) -> None:
        _assert_refused(await client.get("/jobs/j", headers=_bearer(confused)), 401, "algorithm")
        _assert_refused(await client.get("/jobs/j", headers=_bearer(unsigned)), 401, "algorithm")
        foreign = jwt.encode(_claims(aud=None, iss=None), other, algorithm="RS256")
        _assert_refused(await client.get("/jobs/j", headers=_bearer(foreign)), 401, "signature")
        valid = jwt.encode(_claims(aud=None, iss=None), private, algorithm="RS256")
        assert (await client.get("/jobs/j", headers=_bearer(valid))).status_code == 404

    run_against_app(scenario)


def test_es256_public_key_as_pem_text(app_env: pytest.MonkeyPatch) -> None:
    private = ec.generate_private_key(ec.SECP256R1())
    app_env.setenv("AGENT_API_JWT_PUBLIC_KEY", _pem(private.public_key()))
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    async def scenario(client: httpx.AsyncClient) -> None:
        valid = jwt.encode(_claims(aud=None, iss=None), private, algorithm="ES256")
        assert (await client.get("/jobs/j", headers=_bearer(valid))).status_code == 404
        wrong_alg = jwt.encode(_claims(aud=None, iss=None), rsa_key, algorithm="RS256")
        _assert_refused(await client.get("/jobs/j", headers=_bearer(wrong_alg)), 401, "algorithm")

    run_against_app(scenario)


def test_v1_routes_refuse_in_openais_error_shape(app_env: pytest.MonkeyPatch) -> None:
    app_env.setenv("AGENT_API_JWT_SECRET", SECRET)

    async def scenario(client: httpx.AsyncClient) -> None:
        refused = await client.get("/v1/models")
        assert refused.status_code == 401 and refused.headers["WWW-Authenticate"].startswith("Bearer ")
        assert refused.json()["error"]["code"] == "invalid_api_key"

    run_against_app(scenario)


def test_without_a_key_the_api_is_open(app_env: pytest.MonkeyPatch) -> None:
    async def scenario(client: httpx.AsyncClient) -> None:
        assert (await client.get("/jobs/some-job")).status_code == 404
        assert (await client.delete("/select_model")).status_code == 200

    run_against_app(scenario)
