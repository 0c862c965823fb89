"""Property-based requests over the API's OpenAPI schema (schemathesis): no 500, no answer that breaks it.

The real API under uvicorn with a real Redis, a worker and the mock LLM behind it, so that valid
chats are answered (quickly) rather than waiting out their deadline. Every operation the app has
when this runs is covered, with a bounded number of examples each (CI's budget). The checks: no 500,
and each answer fits its documented schema and content type (502/503/504 are answers: every
endpoint failed, no LLM, the deadline passed). A 4xx for data the schema allows (an unknown model, a job id
nobody made) is the API doing its job, so positive-data and status-code checks are not run.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import content_type_conformance, response_schema_conformance

from api.app import create_app
from llmpool.dev.mock_llm import ContainerSpec, MockLLM
from llmpool.dev.redis_server import RedisServer
from tests.conftest import require_redis_binary
from tests.pool import pool_with_api

MAX_EXAMPLES = 25  # per operation: ~15 operations in well under a minute on 2 cores
schema = schemathesis.openapi.from_dict(create_app().openapi())


@pytest.fixture(scope="module")
def api_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    require_redis_binary()
    tmp: Path = tmp_path_factory.mktemp("schema")
    with RedisServer(data_dir=tmp / "redis") as server:
        mock = MockLLM(containers=[ContainerSpec(name="only", model_name="Llama-3.1-8B-Instruct", ttft=0.0)]).start()
        # Short answers and deadlines: a generated chat asking for many tokens or a long wait ends soon.
        with pool_with_api(tmp, server, mock, workers=1, threads=8, agent_job_deadline=5,
                           agent_job_deadline_high=5, agent_job_deadline_low=5) as (_pool, url):
            yield url


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.filter_too_much])
def test_no_500_and_every_answer_fits_the_schema(case: schemathesis.Case, api_url: str) -> None:
    response = case.call(base_url=api_url, timeout=30)
    # 502/503/504 are answers (every endpoint failed, no LLM, the deadline passed); a 500 is a crash.
    assert response.status_code != 500, (case.method, case.path, response.text[:500])
    case.validate_response(response, checks=[response_schema_conformance, content_type_conformance])
