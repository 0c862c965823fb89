"""The public Client against a real worker: results, streamed tokens, failures as their own classes."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from llmpool import BadRequest, Client, JobNotFound, RedisUnavailable, ResultTimeout, SubmitFailed
from llmpool.dev.redis_server import free_port
from tests.chaos.harness import Chaos, open_chaos


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chaos]:
    with open_chaos(tmp_path_factory.mktemp("client"), llm_seconds=0.05) as chaos:
        chaos.mock.configure("llm", tokens_per_second=200)
        chaos.worker("w1", concurrency=4)
        yield chaos


def test_a_streamed_job_yields_its_tokens_then_its_end(rig: Chaos) -> None:
    with Client(rig.server.url) as client:
        job_id = client.submit("stream me", stream=True).job_id
        events = list(client.stream(job_id, timeout=30))
        answer = client.result(job_id)
    assert events[-1].type == "end" and events[-1].state == "succeeded"
    tokens = "".join(e.text for e in events if e.type == "token")
    assert tokens == answer.content and answer.content.endswith("You said: stream me")


def test_a_failed_job_raises_its_own_error_class(rig: Chaos) -> None:
    rig.mock.set_fault("llm", "error400", requests=1)
    with Client(rig.server.url) as client:
        job_id = client.submit("too long").job_id
        with pytest.raises(BadRequest) as failure:
            client.result(job_id, timeout=30)
        assert failure.value.code in ("bad_request", "context_too_long")
        with pytest.raises(JobNotFound):
            client.result("no-such-job")


def test_a_result_not_ready_in_time_raises_result_timeout(rig: Chaos) -> None:
    with Client(rig.server.url) as client:
        job_id = client.submit("not yet", priority="low", thread_id="t-1").job_id
        with pytest.raises(ResultTimeout):
            client.result(job_id, timeout=0.01)
        assert client.result(job_id, timeout=30).content.endswith("You said: not yet")  # it finishes later


def test_a_redis_that_does_not_answer_is_a_named_refusal() -> None:
    """Nothing listens on the port: submit raises the Client's own error, not redis-py's."""
    with Client(f"redis://127.0.0.1:{free_port()}/0") as client:
        with pytest.raises(RedisUnavailable) as refused:
            client.submit("anyone there?")
    assert isinstance(refused.value, SubmitFailed) and refused.value.code == "redis_unavailable"
