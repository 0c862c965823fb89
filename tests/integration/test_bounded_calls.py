"""Every LLM call ends by its bounds whatever the server does: trickles, endless streams, huge
answers. Against the real mock LLM, first through LLMClient alone, then through a real worker,
whose endpoint concurrency leases must come back and whose jobs fail over or fail by name.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from llmpool.dev.mock_llm import ContainerSpec, Knobs, MockLLM, deploy_id
from llmpool.dev.redis_server import RedisServer
from llmpool.endpoints import Endpoint
from llmpool.errors import LLMPoolError
from llmpool.llm_client import LLMClient, make_http_client
from llmpool.schemas import parse_job
from llmpool.settings import load_settings
from tests.pool import Pool, start_pool
from tests.processes import wait_for

pytestmark = pytest.mark.timeout(90)

TIMEOUT = 3.0  # AGENT_REQUEST_TIMEOUT of the worker
MAX_BYTES, MAX_LINE = 1024 * 1024, 64 * 1024
BAD, GOOD = deploy_id("bad"), deploy_id("good")
# The 70B model ranks first (AGENT_PRIORITY_MODELS): every job tries `bad` before `good`.
SPECS = [ContainerSpec(name="bad", model_name="Llama-3.1-70B-Instruct", ttft=0.01),
         ContainerSpec(name="good", model_name="Llama-3.1-8B-Instruct", ttft=0.01)]


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pool]:
    tmp = tmp_path_factory.mktemp("bounded")
    with RedisServer(data_dir=tmp / "redis") as server, MockLLM(SPECS) as mock:
        # Hedging off: these tests are about one call's own bounds, which a hedge would race past.
        started = start_pool(tmp, server, mock, workers=1, threads=4, max_failures=10,
                             agent_request_timeout=TIMEOUT, agent_first_token_timeout=2,
                             agent_max_response_bytes=MAX_BYTES, agent_max_line_bytes=MAX_LINE,
                             agent_hedge_enabled="false")
        try:
            yield started
        finally:
            started.stop()


DEFAULT_KNOBS = {k: v for k, v in Knobs().to_dict().items()
                 if k in ("fault", "reply", "tokens_per_second", "trickle_interval", "huge_bytes")}


@pytest.fixture(autouse=True)
def healthy(pool: Pool) -> Iterator[None]:
    for name in ("bad", "good"):
        pool.mock.configure(name, **DEFAULT_KNOBS)
        pool.mock.reset(name)
        pool.admitter.reset(deploy_id(name))
    yield
    for name in ("bad", "good"):
        pool.mock.configure(name, **DEFAULT_KNOBS)


def _chat_calls(pool: Pool, name: str) -> list[dict[str, Any]]:
    return [r for r in pool.mock.stats(name)["records"] if r["path"] == "/v1/chat/completions"]


def _leases_back(pool: Pool) -> None:
    assert pool.admitter.in_flight([BAD, GOOD]) == {BAD: 0, GOOD: 0}
    wait_for(lambda: pool.mock.stats("bad")["in_flight"] == pool.mock.stats("good")["in_flight"] == 0,
             timeout=5, what="the mock to see every connection closed")


# -- LLMClient alone ---------------------------------------------------------------------------

CLIENT_TIMEOUT = 1.0
CLIENT_CASES = {  # (fault, streamed) -> the error the call ends with
    ("trickle", True): "request_timeout", ("trickle", False): "request_timeout",
    ("endless_stream", True): "request_timeout", ("endless_stream", False): "request_timeout",
    ("huge_body", True): "response_too_large", ("huge_body", False): "response_too_large",
    ("huge_line", True): "line_too_long", ("huge_line", False): "response_too_large",  # JSON is one body
}


@pytest.mark.parametrize(("fault", "stream"), list(CLIENT_CASES), ids=[f"{f}-{'sse' if s else 'json'}"
                                                                      for f, s in CLIENT_CASES])
def test_a_call_ends_by_its_bounds(pool: Pool, fault: str, stream: bool) -> None:
    settings = load_settings(agent_request_timeout=CLIENT_TIMEOUT, agent_first_token_timeout=CLIENT_TIMEOUT,
                             agent_max_response_bytes=MAX_BYTES, agent_max_line_bytes=MAX_LINE)
    endpoint = Endpoint(id="bad", chat_url=pool.mock.url("bad") + "/v1/chat/completions", model="m",
                        model_name="bad", source="discovered")
    pool.mock.set_fault("bad", fault)
    job = parse_job({"messages": [{"role": "user", "content": "hi"}], "stream": stream})
    with make_http_client(settings) as http:
        started = time.monotonic()
        with pytest.raises(LLMPoolError) as caught:
            LLMClient(http, settings).chat(endpoint, job, stream=stream)
        elapsed = time.monotonic() - started
    assert caught.value.code == CLIENT_CASES[(fault, stream)]
    if caught.value.code == "request_timeout":
        assert CLIENT_TIMEOUT <= elapsed < CLIENT_TIMEOUT + 0.25, elapsed  # the overshoot is the timer's slack
    else:
        assert elapsed < CLIENT_TIMEOUT  # the cap stops reading long before a timeout could


def test_a_healthy_answer_under_the_caps_is_whole(pool: Pool) -> None:
    settings = load_settings(agent_max_response_bytes=MAX_BYTES, agent_max_line_bytes=MAX_LINE)
    endpoint = Endpoint(id="good", chat_url=pool.mock.url("good") + "/v1/chat/completions", model="m",
                        model_name="good", source="discovered")
    reply = "word " * 2000  # ~10 KB of text in 2,000 SSE chunks
    pool.mock.configure("good", reply=reply, tokens_per_second=0)
    job = parse_job({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4000})
    with make_http_client(settings) as http:
        outcome = LLMClient(http, settings).chat(endpoint, job)
    assert outcome.completion.content == reply and outcome.completion.finish_reason == "stop"


# -- through a real worker ---------------------------------------------------------------------

@pytest.mark.parametrize("fault", ["trickle", "endless_stream"])
def test_a_server_that_never_finishes_is_cut_at_the_timeout_and_the_job_fails_over(pool: Pool,
                                                                                    fault: str) -> None:
    pool.mock.set_fault("bad", fault)
    [record] = pool.finished(pool.submit(1), timeout=30)
    assert record["state"] == "succeeded" and record["result"]["endpoint"] == GOOD, record
    failed = [(e["endpoint"], e["error"]) for e in record["history"] if e["event"] == "call_failed"]
    assert failed == [(BAD, "request_timeout")]
    [call] = _chat_calls(pool, "bad")
    assert TIMEOUT - 0.1 <= call["duration"] < TIMEOUT + 1.0, call  # the mock saw us leave at the timeout
    _leases_back(pool)


@pytest.mark.parametrize(("bad", "good", "errors"), [
    ("endless_stream", "trickle", ["request_timeout", "request_timeout"]),
    ("huge_line", "huge_body", ["line_too_long", "response_too_large"]),
], ids=["never-ending", "too-big"])
def test_when_every_endpoint_overruns_the_job_fails_naming_each_bound(pool: Pool, bad: str, good: str,
                                                                      errors: list[str]) -> None:
    pool.mock.set_fault("bad", bad)
    pool.mock.set_fault("good", good)
    [record] = pool.finished(pool.submit(1), timeout=30)
    assert record["state"] == "failed" and record["error"]["type"] == "all_endpoints_failed", record
    assert [(f["endpoint"], f["type"]) for f in record["error"]["failures"]] == list(zip([BAD, GOOD], errors,
                                                                                          strict=True))
    breakers = pool.admitter.stats([BAD, GOOD])
    assert (breakers[BAD]["failures"], breakers[GOOD]["failures"]) == (1, 1)  # the endpoints' fault: charged
    _leases_back(pool)


def test_a_call_longer_than_its_lease_keeps_its_claim_and_its_concurrency_slot(tmp_path: Path) -> None:
    """Job lease 3 s, a streamed answer of ~7 s, one call at a time: the lease thread renews both
    leases, so the job runs once and a second job waits for the slot instead of taking it."""
    lease, seconds = 3, 7.0
    slow = ContainerSpec(name="slow", ttft=0.01, tokens_per_second=2, reply=" ".join(["tok"] * int(seconds * 2)))
    with RedisServer(data_dir=tmp_path / "redis") as server, MockLLM([slow]) as mock:
        pool = start_pool(tmp_path, server, mock, workers=1, threads=4, agent_job_lease=lease,
                          agent_request_timeout=20, agent_endpoint_max_concurrency=1, agent_sweep_interval=1)
        try:
            [long_job] = pool.submit(1)
            wait_for(lambda: mock.stats("slow")["in_flight"] == 1, timeout=10, what="the long call to start")
            mock.configure("slow", reply="short")  # the running answer keeps its own reply
            time.sleep(lease + 1.5)  # past the first lease of the call and of the claim
            assert pool.admitter.in_flight([deploy_id("slow")]) == {deploy_id("slow"): 1}
            [short_job] = pool.submit(1)
            long_record, short_record = pool.finished([long_job, short_job], timeout=30)
            peak = mock.stats("slow")["peak_in_flight"]
        finally:
            pool.stop()
    assert long_record["state"] == short_record["state"] == "succeeded"
    assert [e["event"] for e in long_record["history"]] == ["claimed", "succeeded"]  # never handed back
    assert long_record["result"]["timings"]["total"] >= seconds - 1
    assert any(e["event"] == "refused" and e.get("reason") == "concurrency" for e in short_record["history"])
    assert peak == 1


# -- the mock's faults look like real servers gone wrong ---------------------------------------

def _raw(pool: Pool, *, stream: bool, seconds: float) -> bytes:
    """What `bad` sends within `seconds` (the read stops there, as a client giving up would)."""
    body = {"messages": [{"role": "user", "content": "hi"}], "stream": stream}
    received = bytearray()
    until = time.monotonic() + seconds
    with httpx.Client() as http, http.stream("POST", pool.mock.url("bad") + "/v1/chat/completions", json=body,
                                             timeout=seconds + 1) as response:
        assert response.status_code == 200
        for chunk in response.iter_raw():
            received += chunk
            if time.monotonic() > until:
                break
    return bytes(received)


def test_the_mock_trickles_a_byte_at_a_time_and_streams_keepalives_forever(pool: Pool) -> None:
    pool.mock.configure("bad", fault="trickle", trickle_interval=0.2)
    trickled = _raw(pool, stream=True, seconds=1.0)
    assert b"data: {\"id\"".startswith(trickled) and 3 <= len(trickled) <= 8  # one byte every 0.2 s
    pool.mock.configure("bad", fault="endless_stream", tokens_per_second=50)
    endless = _raw(pool, stream=True, seconds=1.0).decode()
    assert endless.count(": keepalive\n\n") >= 20 and '"content"' in endless
    assert "[DONE]" not in endless and '"finish_reason":"' not in endless


def test_the_mock_huge_body_is_whole_json_of_the_size_asked(pool: Pool) -> None:
    pool.mock.configure("bad", fault="huge_body", huge_bytes=300_000)
    body = {"messages": [{"role": "user", "content": "hi"}]}
    answer = httpx.post(pool.mock.url("bad") + "/v1/chat/completions", json=body, timeout=10).json()
    content = answer["choices"][0]["message"]["content"]
    assert len(content) >= 300_000 and set(content) == {"x"}
