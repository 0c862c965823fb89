"""Request building: TT-Studio's body per endpoint flavor and the exact bearer vLLM compares."""

from __future__ import annotations

import jwt
import pytest

from llmpool.auth import tt_studio_jwt
from llmpool.endpoints import Endpoint, container_endpoint
from llmpool.llm_request import build_request
from llmpool.schemas import parse_job
from llmpool.settings import Settings

LOCAL = Endpoint(id="local", chat_url="http://h:7000/v1/chat/completions", model="meta-llama/L",
                 model_name="L", source="local")
CLOUD = Endpoint(id="cloud", chat_url="https://c/v1/chat/completions", model="gpt", model_name="gpt",
                 source="cloud", flavor="openai", auth="cloud")
SECRET = "a-test-secret-long-enough-for-hs256-keys"
JOB = parse_job({"messages": [{"role": "user", "content": "hi"}]})


def test_jwt_is_pyjwt_encoding_of_the_tt_studio_payload_byte_for_byte() -> None:
    token = tt_studio_jwt(SECRET)
    # Header and payload segments are fixed by PyJWT's canonical JSON and the payload's key order.
    assert token.split(".")[:2] == ["eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9",
                                    "eyJ0ZWFtX2lkIjoidGVuc3RvcnJlbnQiLCJ0b2tlbl9pZCI6ImRlYnVnLXRlc3QifQ"]
    assert jwt.decode(token, SECRET, algorithms=["HS256"]) == {"team_id": "tenstorrent",
                                                                 "token_id": "debug-test"}


def test_local_body_is_tt_studios_vllm_body() -> None:
    req = build_request(LOCAL, JOB, Settings(jwt_secret=SECRET))
    assert req.url == LOCAL.chat_url
    assert req.body == {
        "model": "meta-llama/L", "messages": [{"role": "user", "content": "hi"}],
        "temperature": 0.6, "top_k": 20, "top_p": 0.9, "stop": ["<|eot_id|>"], "max_tokens": 2048,
        "stream": True, "stream_options": {"include_usage": True, "continuous_usage_stats": True},
    }
    assert req.headers["Authorization"] == "Bearer " + tt_studio_jwt(SECRET)


def test_cloud_body_stays_within_openai_schema_and_uses_cloud_token() -> None:
    job = parse_job({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 5,
                     "temperature": 0.1, "tools": [{"type": "function", "function": {"name": "f"}}]})
    req = build_request(CLOUD, job, Settings(cloud_chat_ui_auth_token="tok", jwt_secret=SECRET))
    assert req.headers["Authorization"] == "Bearer tok"
    assert "top_k" not in req.body and "stop" not in req.body
    assert req.body["temperature"] == 0.1 and req.body["max_tokens"] == 5
    assert req.body["tool_choice"] == "auto" and req.body["tools"][0]["function"]["name"] == "f"
    assert req.body["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        (Settings(), None),
        (Settings(jwt_secret=SECRET), "Bearer " + tt_studio_jwt(SECRET)),
        (Settings(jwt_secret=SECRET, cloud_chat_ui_auth_token="tok"), "Bearer tok"),
    ],
)
def test_container_bearer_choice(settings: Settings, expected: str | None) -> None:
    headers = build_request(LOCAL, JOB, settings).headers
    assert headers.get("Authorization") == expected


def test_non_streaming_request_has_no_stream_options() -> None:
    req = build_request(LOCAL, JOB, Settings(), stream=False)
    assert req.body["stream"] is False and "stream_options" not in req.body
    assert req.headers["Accept"] == "application/json"


def test_headers_never_show_in_repr() -> None:
    req = build_request(LOCAL, JOB, Settings(cloud_chat_ui_auth_token="tok-secret"))
    assert "tok-secret" not in repr(req)


def test_container_endpoint_urls() -> None:
    container = container_endpoint(Settings(llm_container_name="llm1"))
    assert container is not None
    assert container.chat_url == "http://llm1:7000/v1/chat/completions"
    assert container.health_url == "http://llm1:7000/health"


DEV_JOB = parse_job({"messages": [
    {"role": "developer", "content": "be brief"}, {"role": "user", "content": "hi"},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
    {"role": "tool", "tool_call_id": "c1", "content": "42"}]})


@pytest.mark.parametrize("kind", ["llama-cpp-python", "llamacpp", "ollama", "lmstudio", "vllm", "unknown"])
def test_a_local_server_gets_developer_as_system(kind: str) -> None:
    endpoint = Endpoint(id="o", chat_url="http://h/v1/chat/completions", model="m", model_name="m",
                        source="openai", flavor="openai", auth="none", kind=kind)
    roles = [m["role"] for m in build_request(endpoint, DEV_JOB, Settings()).body["messages"]]
    assert roles == ["system", "user", "assistant", "tool"]


def test_the_cloud_gets_developer_as_developer() -> None:
    roles = [m["role"] for m in build_request(CLOUD, DEV_JOB, Settings()).body["messages"]]
    assert roles[0] == "developer"


@pytest.mark.parametrize("endpoint", [LOCAL, CLOUD], ids=["local", "cloud"])
def test_an_assistant_tool_call_turn_without_content_carries_an_empty_string(endpoint: Endpoint) -> None:
    assistant = build_request(endpoint, DEV_JOB, Settings()).body["messages"][2]
    assert assistant["content"] == "" and assistant["tool_calls"][0]["id"] == "c1"
    assert DEV_JOB.messages[2].content is None  # the job itself is untouched
