"""Fleet-wide metrics aggregated in Redis: what a job run adds, how many writers sum up, what a scrape
reads, and that no label can grow without bound. On fakeredis (conftest `any_redis`)."""

from __future__ import annotations

import math
from typing import Any

import fakeredis
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from llmpool.admission import Admitter, Limits
from llmpool.breaker import BreakerConfig
from llmpool.endpoints import Endpoint
from llmpool.health import Health
from llmpool.keys import Keys
from llmpool.metrics import MetricsRecorder, MetricsStore, RunFacts
from llmpool.metrics.catalog import JOB_LATENCY
from llmpool.metrics.collector import PoolCollector, exposition
from llmpool.metrics.store import Batch
from llmpool.registry import EndpointRecord, Registry

KEYS = Keys("t")
A, B = "ep-a", "ep-b"
MODELS = {A: "Llama-3.1-70B", B: "Llama-3.1-8B"}


def _registered(client: redis.Redis, ids: tuple[str, ...] = (A, B)) -> None:
    registry = Registry(client, KEYS)
    registry.write_records({i: EndpointRecord(Endpoint(id=i, chat_url=f"http://{i}/v1/chat/completions",
                                                       model=MODELS[i], model_name=MODELS[i], source="discovered"),
                                              "backend", 1.0, 1.0) for i in ids})
    registry.write_health({i: Health(state="healthy", latency=0.02) for i in ids})


def scrape(client: redis.Redis) -> dict[str, float]:
    """Every sample of a scrape as `name{label="value",...}` -> value (labels sorted by name)."""
    text = exposition(PoolCollector(client, KEYS)).decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            samples[f"{s.name}{{{labels}}}"] = s.value
    return samples


def _success(endpoint: str, *, prompt: int = 12, completion: int = 30, ttft: float = 0.2,
             tpot: float = 0.02) -> dict[str, Any]:
    return {"endpoint": endpoint, "usage": {"prompt_tokens": prompt, "completion_tokens": completion},
            "timings": {"ttft": ttft, "total": 1.0, "tpot": tpot}}


FAILOVER_RUN = RunFacts(
    queue="chat.default", ended="succeeded", result=_success(B),
    failures=[{"endpoint": A, "type": "server_error", "message": "HTTP 500 from the LLM"}],
    failovers=[A], queue_wait=0.3, latency=1.6)


def test_a_failover_run_counts_the_job_once_under_the_endpoint_that_answered(any_redis: redis.Redis) -> None:
    _registered(any_redis)
    MetricsRecorder(MetricsStore(any_redis, KEYS)).run_ended(FAILOVER_RUN)
    got = scrape(any_redis)
    job = 'llmpool_jobs_total{endpoint="ep-b",error="",model="Llama-3.1-8B",outcome="succeeded",queue="chat.default"}'
    assert got[job] == 1
    assert [k for k in got if k.startswith("llmpool_jobs_total")] == [job]
    assert got['llmpool_call_failures_total{endpoint="ep-a",error="server_error"}'] == 1
    assert got['llmpool_failovers_total{endpoint="ep-a"}'] == 1
    assert got['llmpool_tokens_total{direction="in",endpoint="ep-b"}'] == 12
    assert got['llmpool_tokens_total{direction="out",endpoint="ep-b"}'] == 30
    assert got['llmpool_time_to_first_token_seconds_count{endpoint="ep-b"}'] == 1
    assert got['llmpool_time_to_first_token_seconds_sum{endpoint="ep-b"}'] == pytest.approx(0.2)
    assert got['llmpool_tokens_per_second_bucket{endpoint="ep-b",le="50.0"}'] == 1  # 1 / 0.02 s
    assert got['llmpool_tokens_per_second_bucket{endpoint="ep-b",le="30.0"}'] == 0
    assert got['llmpool_queue_wait_seconds_count{queue="chat.default"}'] == 1
    assert got['llmpool_job_latency_seconds_sum{outcome="succeeded",queue="chat.default"}'] == pytest.approx(1.6)


def test_many_writers_sum_up(any_redis: redis.Redis) -> None:
    """Each worker process (on any host) has its own client; Redis adds their increments atomically."""
    _registered(any_redis)
    workers = [MetricsRecorder(MetricsStore(any_redis, KEYS)) for _ in range(4)]
    for n in range(40):
        workers[n % 4].run_ended(FAILOVER_RUN)
    got = scrape(any_redis)
    assert got['llmpool_jobs_total{endpoint="ep-b",error="",model="Llama-3.1-8B",outcome="succeeded",'
               'queue="chat.default"}'] == 40
    assert got['llmpool_failovers_total{endpoint="ep-a"}'] == 40
    assert got['llmpool_tokens_total{direction="out",endpoint="ep-b"}'] == 40 * 30
    assert got['llmpool_time_to_first_token_seconds_sum{endpoint="ep-b"}'] == pytest.approx(40 * 0.2)


def test_histograms_are_cumulative_with_their_sum_and_count(any_redis: redis.Redis) -> None:
    batch = Batch()
    values = [0.05, 0.3, 0.3, 7.0, 5000.0]
    for value in values:
        batch.observe(JOB_LATENCY, ("chat.low", "failed"), value)
    MetricsStore(any_redis, KEYS).write(batch)
    got = scrape(any_redis)
    series = 'outcome="failed",queue="chat.low"'
    bucket = {le: got[f'llmpool_job_latency_seconds_bucket{{le="{le}",{series}}}']
              for le in ("0.1", "0.5", "5.0", "10.0", "1800.0", "+Inf")}
    assert bucket == {"0.1": 1, "0.5": 3, "5.0": 3, "10.0": 4, "1800.0": 4, "+Inf": 5}
    assert got[f"llmpool_job_latency_seconds_count{{{series}}}"] == 5
    assert got[f"llmpool_job_latency_seconds_sum{{{series}}}"] == pytest.approx(math.fsum(values))


def test_a_parked_run_counts_its_refusals_and_no_job(any_redis: redis.Redis) -> None:
    _registered(any_redis)
    parked = RunFacts(queue="chat.high", refusals=[{"endpoint": A, "reason": "open", "retry_after": 1.0},
                                                   {"endpoint": B, "reason": "concurrency", "retry_after": 0.5}])
    MetricsRecorder(MetricsStore(any_redis, KEYS)).run_ended(parked)
    got = scrape(any_redis)
    assert got['llmpool_admission_refusals_total{endpoint="ep-a",reason="open"}'] == 1
    assert got['llmpool_admission_refusals_total{endpoint="ep-b",reason="concurrency"}'] == 1
    assert not [k for k in got if k.startswith(("llmpool_jobs_total", "llmpool_job_latency"))]


def test_a_job_that_failed_everywhere_counts_under_its_last_endpoint_and_error(any_redis: redis.Redis) -> None:
    _registered(any_redis)
    failed = RunFacts(queue="chat.default", ended="failed", error="all_endpoints_failed", latency=2.0,
                      failures=[{"endpoint": A, "type": "endpoint_timeout"}, {"endpoint": B, "type": "server_error"}],
                      failovers=[A])
    expired = RunFacts(queue="chat.low", ended="expired", error="expired")
    recorder = MetricsRecorder(MetricsStore(any_redis, KEYS))
    recorder.run_ended(failed)
    recorder.run_ended(expired)
    got = scrape(any_redis)
    assert got['llmpool_jobs_total{endpoint="ep-b",error="all_endpoints_failed",model="Llama-3.1-8B",'
               'outcome="failed",queue="chat.default"}'] == 1
    assert got['llmpool_jobs_total{endpoint="none",error="expired",model="none",outcome="expired",'
               'queue="chat.low"}'] == 1
    assert got['llmpool_failovers_total{endpoint="ep-a"}'] == 1  # B was the last: nothing to move on to


def test_a_run_whose_job_another_run_ended_counts_its_call_but_not_the_job(any_redis: redis.Redis) -> None:
    _registered(any_redis)
    MetricsRecorder(MetricsStore(any_redis, KEYS)).run_ended(RunFacts(queue="chat.default", result=_success(A)))
    got = scrape(any_redis)
    assert got['llmpool_tokens_total{direction="out",endpoint="ep-a"}'] == 30
    assert not [k for k in got if k.startswith("llmpool_jobs_total")]


def test_labels_stay_bounded(any_redis: redis.Redis) -> None:
    """Only codes pass as reasons and errors, and an endpoint that left the registry leaves /metrics
    and Redis with its series; the `none` endpoint stays."""
    _registered(any_redis)
    odd = RunFacts(queue="chat.default", ended="failed", error="Traceback: secret prompt text",
                   failures=[{"endpoint": A, "type": "ValueError('my prompt')"}])
    recorder = MetricsRecorder(MetricsStore(any_redis, KEYS))
    recorder.run_ended(odd)
    recorder.run_ended(RunFacts(queue="chat.low", ended="expired", error="expired"))
    recorder.run_ended(FAILOVER_RUN)
    got = scrape(any_redis)
    assert got['llmpool_call_failures_total{endpoint="ep-a",error="other"}'] == 1
    assert got['llmpool_jobs_total{endpoint="ep-a",error="other",model="Llama-3.1-70B",outcome="failed",'
               'queue="chat.default"}'] == 1
    assert not [k for k in got if "prompt" in k or "Traceback" in k]
    _registered(any_redis, (B,))  # discovery no longer lists A
    after = scrape(any_redis)
    assert not [k for k in after if 'endpoint="ep-a"' in k and not k.startswith(_LIVE_PREFIXES)]
    assert after['llmpool_jobs_total{endpoint="none",error="expired",model="none",outcome="expired",'
                 'queue="chat.low"}'] == 1
    fields = {f for stem in ("llmpool_jobs", "llmpool_call_failures", "llmpool_failovers")
              for f in any_redis.hkeys(KEYS.metric(stem))}
    assert fields and not [f for f in fields if b'"ep-a"' in f]  # deleted from Redis, not only hidden


_LIVE_PREFIXES = ("llmpool_breaker", "llmpool_endpoint")


def test_live_gauges_read_the_pools_state(any_redis: redis.Redis) -> None:
    _registered(any_redis)
    admitter = Admitter(any_redis, KEYS)
    config = BreakerConfig(max_failures=2, window=10, min_calls=100, open_wait=60, open_wait_max=60, trial_lease=5)
    free = Limits(period=1.0)
    for n in range(2):  # two failures in a row open A's breaker
        assert admitter.admit(A, f"j{n}", tokens=0, limits=free, breaker=config, lease=5.0).allowed
        admitter.settle(A, f"j{n}", outcome="failure", trial=False, reserved_tokens=0, used_tokens=None,
                        duration=0.1, limits=free, breaker=config)
    assert admitter.admit(B, "k", tokens=0, limits=free, breaker=config, lease=5.0).allowed  # in flight
    any_redis.rpush(KEYS.celery_queue("chat.high"), "m1", "m2")
    any_redis.zadd(KEYS.jobs_parked(), {"p1": 1.0, "p2": 2.0, "p3": 3.0})
    got = scrape(any_redis)
    assert got['llmpool_breaker_state{endpoint="ep-a"}'] == 2  # open
    assert got['llmpool_breaker_state{endpoint="ep-b"}'] == 0
    assert got['llmpool_breaker_trips_total{endpoint="ep-a"}'] == 1
    assert got['llmpool_endpoint_in_flight{endpoint="ep-b"}'] == 1
    assert got['llmpool_endpoint_health{endpoint="ep-a",state="healthy"}'] == 1
    assert got['llmpool_endpoint_health{endpoint="ep-a",state="unhealthy"}'] == 0
    assert got['llmpool_endpoint_probe_latency_seconds{endpoint="ep-a"}'] == pytest.approx(0.02)
    assert got['llmpool_queue_depth{queue="chat.high"}'] == 2
    assert got['llmpool_queue_depth{queue="chat.low"}'] == 0
    assert got["llmpool_jobs_waiting{}"] == 3


def test_sweep_recoveries_by_reason_and_queue(any_redis: redis.Redis) -> None:
    recorder = MetricsRecorder(MetricsStore(any_redis, KEYS))
    recorder.swept([("lease_lapsed", "chat.high"), ("lease_lapsed", "chat.high"), ("due", "chat.low")])
    recorder.swept([])
    got = scrape(any_redis)
    assert got['llmpool_sweep_recoveries_total{queue="chat.high",reason="lease_lapsed"}'] == 2
    assert got['llmpool_sweep_recoveries_total{queue="chat.low",reason="due"}'] == 1


class _Counting(fakeredis.FakeRedis):
    """Counts round trips: each command sent alone, and each pipeline sent."""

    trips = 0

    def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        self.trips += 1
        return super().execute_command(*args, **kwargs)

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> Any:
        pipe = super().pipeline(transaction, shard_hint)
        send = pipe.execute

        def execute(*args: Any, **kwargs: Any) -> Any:
            self.trips += 1
            return send(*args, **kwargs)

        pipe.execute = execute  # type: ignore[method-assign]
        return pipe


def test_a_run_costs_one_round_trip_and_a_dead_redis_fails_no_job() -> None:
    client = _Counting()
    MetricsRecorder(MetricsStore(client, KEYS)).run_ended(FAILOVER_RUN)
    assert client.trips == 1
    assert len(client.hgetall(KEYS.metric("llmpool_jobs"))) == 1
    server = fakeredis.FakeServer()
    server.connected = False  # Redis is down: every command raises ConnectionError
    down = fakeredis.FakeRedis(server=server)
    with pytest.raises(redis.ConnectionError):
        down.ping()
    MetricsRecorder(MetricsStore(down, KEYS)).run_ended(FAILOVER_RUN)  # dropped, not raised


def test_hedges_count_under_the_slow_endpoint_by_what_became_of_them(any_redis: redis.Redis) -> None:
    _registered(any_redis)
    won = {"event": "hedge", "state": "sent", "delay": 1.0, "from": A, "endpoint": B, "won": True}
    lost = {**won, "won": False}
    refused = {"event": "hedge", "state": "refused", "delay": 1.0, "from": A}
    recorder = MetricsRecorder(MetricsStore(any_redis, KEYS))
    recorder.run_ended(RunFacts(queue="chat.default", ended="succeeded", result=_success(B), hedges=[won]))
    recorder.run_ended(RunFacts(queue="chat.default", ended="succeeded", result=_success(A), hedges=[lost]))
    recorder.run_ended(RunFacts(queue="chat.default", ended="succeeded", result=_success(A), hedges=[refused]))
    got = scrape(any_redis)
    hedges = {k: v for k, v in got.items() if k.startswith("llmpool_hedges_total")}
    assert hedges == {'llmpool_hedges_total{endpoint="ep-a",outcome="won"}': 1,
                      'llmpool_hedges_total{endpoint="ep-a",outcome="lost"}': 1,
                      'llmpool_hedges_total{endpoint="ep-a",outcome="refused"}': 1}
