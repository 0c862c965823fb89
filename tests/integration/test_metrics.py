"""/metrics on real processes: Redis, one Celery worker, the mock LLM, the API under uvicorn.

The selected endpoint answers 500 to every chat: each job fails over to the backup, the primary's
breaker opens after AGENT_MAX_FAILURES failed calls, and the API's /metrics, read from Redis, shows
the jobs, the failovers and the breaker move. The dashboard's queries name only what it exports.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from llmpool.dev.mock_llm import ContainerSpec, MockLLM, deploy_id
from llmpool.dev.redis_server import RedisServer
from tests.conftest import require_redis_binary
from tests.pool import Pool, start_pool
from tests.processes import start_api
from tests.unit.test_dashboard import METRIC, load_dashboard, queries

MAX_FAILURES = 2
PRIMARY, BACKUP = deploy_id("primary"), deploy_id("backup")
BACKUP_MODEL = "Llama-3.1-8B-Instruct"
SECRET = "tangerine-walrus-7731"  # message text that must never reach /metrics


@dataclass
class Stack:
    pool: Pool
    api: str

    def scrape(self) -> tuple[str, dict[str, float]]:
        """/metrics as text, and every sample as `name{label="value",...}` (labels sorted) -> value."""
        response = httpx.get(f"{self.api}/metrics", timeout=10)
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
        samples = {}
        for family in text_string_to_metric_families(response.text):
            for s in family.samples:
                labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
                samples[f"{s.name}{{{labels}}}"] = s.value
        return response.text, samples

    def chat(self, text: str) -> dict[str, object]:
        response = httpx.post(f"{self.api}/poll_requests", json={"message": text},
                              headers={"Accept": "application/json"}, timeout=30)
        assert response.status_code == 200, response.text
        return dict(response.json())


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    require_redis_binary()
    tmp: Path = tmp_path_factory.mktemp("metrics")
    containers = [ContainerSpec(name="primary", model_name="Llama-3.1-70B-Instruct", ttft=0.01),
                  ContainerSpec(name="backup", model_name=BACKUP_MODEL, ttft=0.01)]
    with RedisServer(data_dir=tmp / "redis") as server, MockLLM(containers=containers) as mock:
        # A long open wait: the breaker is still open when the test looks.
        pool = start_pool(tmp, server, mock, workers=1, threads=4, max_failures=MAX_FAILURES,
                          agent_breaker_open_wait=120, agent_breaker_open_wait_max=120)
        api = None
        try:
            api, url = start_api(tmp, pool.env)
            yield Stack(pool, url)
        finally:
            if api is not None:
                api.stop()
            pool.stop()


JOBS = (f'llmpool_jobs_total{{endpoint="{BACKUP}",error="",model="{BACKUP_MODEL}",outcome="succeeded",'
        f'queue="chat.default"}}')
FAILOVERS = f'llmpool_failovers_total{{endpoint="{PRIMARY}"}}'
FAILED_CALLS = f'llmpool_call_failures_total{{endpoint="{PRIMARY}",error="server_error"}}'
TRIPS = f'llmpool_breaker_trips_total{{endpoint="{PRIMARY}"}}'
STATE = f'llmpool_breaker_state{{endpoint="{PRIMARY}"}}'
REFUSED = f'llmpool_admission_refusals_total{{endpoint="{PRIMARY}",reason="open"}}'


def test_a_failover_moves_the_job_failover_and_breaker_series(stack: Stack) -> None:
    _, before = stack.scrape()
    assert (before.get(JOBS, 0), before.get(FAILOVERS, 0), before[TRIPS], before[STATE]) == (0, 0, 0, 0)
    assert before[f'llmpool_endpoint_current{{endpoint="{PRIMARY}"}}'] == 1
    stack.pool.mock.set_fault("primary", "error500")
    answers = [stack.chat(f"{SECRET} {n}") for n in range(4)]  # one after the other
    assert [a["endpoint"] for a in answers] == [BACKUP] * 4
    text, after = stack.scrape()
    assert after[JOBS] == 4
    # The first MAX_FAILURES jobs met the primary's 500 and moved on; then its breaker was open and
    # the other jobs were turned away from it without a call.
    assert (after[FAILED_CALLS], after[FAILOVERS]) == (MAX_FAILURES, MAX_FAILURES)
    assert (after[TRIPS], after[STATE]) == (1, 2)  # tripped once, open now
    assert after[REFUSED] == 4 - MAX_FAILURES
    assert after[f'llmpool_endpoint_current{{endpoint="{BACKUP}"}}'] == 1
    assert after[f'llmpool_time_to_first_token_seconds_count{{endpoint="{BACKUP}"}}'] == 4
    assert after[f'llmpool_tokens_total{{direction="out",endpoint="{BACKUP}"}}'] > 0
    assert after['llmpool_queue_wait_seconds_count{queue="chat.default"}'] == 4
    # The hung-endpoint gauges: a 500 is an answer, not silence, so nobody is suspected; only the
    # backup has a TTFT history; each endpoint's next first-token timeout is within the setting (5 s).
    gate = {name: {ep: after.get(f'llmpool_endpoint_{name}{{endpoint="{ep}"}}') for ep in (PRIMARY, BACKUP)}
            for name in ("suspect", "suspicions_total", "ttft_p95_seconds", "first_token_timeout_seconds",
                         "awaiting_first_token")}
    assert gate["suspect"] == {PRIMARY: 0, BACKUP: 0} and gate["awaiting_first_token"] == {PRIMARY: 0, BACKUP: 0}
    assert gate["suspicions_total"] == {PRIMARY: 0, BACKUP: 0}
    assert gate["ttft_p95_seconds"][PRIMARY] is None and 0 < (gate["ttft_p95_seconds"][BACKUP] or 0) < 1
    assert all(0 < (t or 0) <= 5 for t in gate["first_token_timeout_seconds"].values()), gate
    assert after['llmpool_job_latency_seconds_count{outcome="succeeded",queue="chat.default"}'] == 4
    assert not [k for k in after if k.startswith("llmpool_jobs_total") and k != JOBS]
    assert SECRET not in text and not [a["job_id"] for a in answers if str(a["job_id"]) in text]


def test_every_dashboard_query_names_a_metric_that_metrics_exports(stack: Stack) -> None:
    text, _ = stack.scrape()
    exported = set()
    for family in text_string_to_metric_families(text):
        suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}.get(family.type, ("",))
        exported |= {family.name + suffix for suffix in suffixes}  # a family with no series yet still counts
    named = {(title, name) for title, expr, _legend in queries(load_dashboard()) for name in METRIC.findall(expr)}
    assert len(named) >= 20
    assert sorted((title, name) for title, name in named if name not in exported) == []
