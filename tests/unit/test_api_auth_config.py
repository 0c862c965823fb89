"""The API's auth settings and the pure parts of auth and input limits: keys, algorithms, scopes, owners."""

from __future__ import annotations

import time
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from api.auth import may_manage, may_read
from api.jwt_verify import InvalidToken, Principal, TokenVerifier, verifier_for
from llmpool.errors import ConfigError, InvalidJob
from llmpool.input_limits import InputLimits
from llmpool.keys import Keys
from llmpool.schemas import ChatJob
from llmpool.settings import Settings, load_settings


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """An environment with no llmpool variable set and no .env file in the working directory."""
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.chdir(tmp_path)
    return monkeypatch


def _pem(key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey) -> str:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


@pytest.mark.parametrize(("make", "algorithm"), [
    (lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048), "RS256"),
    (lambda: ec.generate_private_key(ec.SECP256R1()), "ES256"),
    (lambda: ec.generate_private_key(ec.SECP384R1()), "ES384"),
])
def test_the_algorithm_comes_from_the_key(env: pytest.MonkeyPatch, make, algorithm: str) -> None:
    env.setenv("AGENT_API_JWT_PUBLIC_KEY", _pem(make().public_key()))
    verifier = verifier_for(load_settings())
    assert verifier is not None and verifier.algorithm == algorithm


def test_hs256_with_the_secret_and_none_without_a_key(env: pytest.MonkeyPatch) -> None:
    assert verifier_for(load_settings()) is None
    env.setenv("AGENT_API_JWT_SECRET", "k" * 32)
    verifier = verifier_for(load_settings())
    assert verifier is not None and verifier.algorithm == "HS256"


@pytest.mark.parametrize(("value", "fragment"), [
    ("/no/such/key.pem", "neither PEM text"),
    ("-----BEGIN PUBLIC KEY-----\nnot base64\n-----END PUBLIC KEY-----", "not a PEM public key"),
])
def test_a_bad_public_key_names_the_variable(env: pytest.MonkeyPatch, value: str, fragment: str) -> None:
    env.setenv("AGENT_API_JWT_PUBLIC_KEY", value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert "AGENT_API_JWT_PUBLIC_KEY" in str(caught.value) and fragment in str(caught.value)


def test_a_short_rsa_key_a_private_key_and_both_keys_are_refused(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    env.setenv("AGENT_API_JWT_PUBLIC_KEY", _pem(weak.public_key()))
    with pytest.raises(ConfigError, match="1024 bits"):
        load_settings()
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()).decode()
    (tmp_path / "private.pem").write_text(private_pem)
    env.setenv("AGENT_API_JWT_PUBLIC_KEY", str(tmp_path / "private.pem"))
    with pytest.raises(ConfigError, match="private key is refused"):
        load_settings()
    env.setenv("AGENT_API_JWT_PUBLIC_KEY", _pem(private.public_key()))
    env.setenv("AGENT_API_JWT_SECRET", "k" * 32)
    with pytest.raises(ConfigError, match="not both"):
        load_settings()


def test_the_secret_is_redacted(env: pytest.MonkeyPatch) -> None:
    env.setenv("AGENT_API_JWT_SECRET", "api-secret-" + "x" * 30)
    settings = load_settings()
    shown = repr(settings.redacted()) + repr(settings)
    assert "api-secret-" not in shown and settings.redacted()["agent_api_jwt_secret"] == "***"


VERIFIER = TokenVerifier("k" * 32, "HS256")


@pytest.mark.parametrize(("scope", "scopes"), [
    ("chat llmpool:admin", {"chat", "llmpool:admin"}), (["a", "b"], {"a", "b"}), (None, set()), ("", set()),
])
def test_scopes_are_a_space_separated_string_or_a_list(scope: object, scopes: set[str]) -> None:
    claims = {"sub": "s", "exp": int(time.time()) + 60, **({"scope": scope} if scope is not None else {})}
    principal = VERIFIER.verify(jwt.encode(claims, "k" * 32, algorithm="HS256"))
    assert principal.scopes == scopes and principal.is_admin == ("llmpool:admin" in scopes)


@pytest.mark.parametrize("claims", [{"sub": "", "exp": 9e9}, {"sub": 7, "exp": 9e9}, {"sub": "s" * 256, "exp": 9e9},
                                    {"sub": "s", "exp": 9e9, "scope": 3}])
def test_a_blank_long_or_non_text_sub_or_scope_is_refused(claims: dict) -> None:
    with pytest.raises(InvalidToken):
        VERIFIER.verify(jwt.encode(claims, "k" * 32, algorithm="HS256"))


def test_owners_read_their_own_admins_any_open_api_all() -> None:
    alice, admin = Principal("alice"), Principal("root", frozenset({"llmpool:admin"}))
    assert may_read(alice, "alice") and not may_read(alice, "bob") and not may_read(alice, None)
    assert may_read(admin, "bob") and may_manage(admin, "bob") and not may_manage(alice, "bob")
    assert may_read(None, "bob")


def test_a_subjects_thread_key_cannot_be_named_by_a_thread_id() -> None:
    keys = Keys("p")
    assert keys.conversation("t") == "p:conv:t"
    alice, bob = keys.conversation("t", "alice"), keys.conversation("t", "bob")
    assert alice != bob and alice.startswith("p:conv:~") and "~" not in "".join(keys.conversation("t"))


LIMITS = InputLimits(max_message_chars=10, max_messages=2, max_thread_id=5, max_tokens=100, max_tools=1)
TOOL = {"type": "function", "function": {"name": "f"}}


@pytest.mark.parametrize(("fields", "named"), [
    ({"messages": [{"role": "user", "content": "x" * 11}]}, "messages[0].content: 11 characters"),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": "y" * 11}]}]}, "messages[0].content"),
    ({"messages": [{"role": "user", "content": "a"}] * 3}, "messages: 3 messages"),
    ({"thread_id": "abcdef"}, "thread_id: 6 characters"),
    ({"max_tokens": 101}, "max_tokens: 101"),
    ({"tools": [TOOL, TOOL]}, "tools: 2 tools"),
])
def test_each_limit_names_the_field_and_its_variable(fields: dict, named: str) -> None:
    job = ChatJob.model_validate({"messages": [{"role": "user", "content": "hi"}], **fields})
    with pytest.raises(InvalidJob) as caught:
        LIMITS.check(job)
    assert named in str(caught.value) and "AGENT_API_MAX_" in str(caught.value)


def test_a_job_within_every_limit_passes() -> None:
    job = ChatJob.model_validate({"messages": [{"role": "user", "content": "x" * 10}] * 2, "thread_id": "abcde",
                                  "max_tokens": 100, "tools": [TOOL]})
    assert LIMITS.problems(job) == []
