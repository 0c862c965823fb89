"""The servers' own load: vLLM /metrics and llama.cpp /slots parsed, kept in Redis with a TTL, read
with our leases in one round trip."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import pytest
import redis

from llmpool.admission import Admitter, Limits, breaker_config
from llmpool.endpoints import Endpoint
from llmpool.health import Health
from llmpool.keys import Keys
from llmpool.registry import EndpointRecord, Snapshot
from llmpool.server_load import (
    LoadStore,
    MemberLoad,
    ServerLoad,
    load_ttl,
    parse_llamacpp_slots,
    parse_vllm_metrics,
    progressed,
)
from llmpool.settings import load_settings
from llmpool.status_view import endpoint_rows, render_table
from tests.conftest import FrozenClock

# As vLLM 0.6 (v0 engine) writes it: HELP/TYPE lines, a model_name label, float values.
VLLM_V0 = """\
# HELP vllm:num_requests_running Number of requests currently running on GPU.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{model_name="meta-llama/Llama-3.1-8B-Instruct"} 3.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{model_name="meta-llama/Llama-3.1-8B-Instruct"} 2.0
# HELP vllm:gpu_cache_usage_perc GPU KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:gpu_cache_usage_perc gauge
vllm:gpu_cache_usage_perc{model_name="meta-llama/Llama-3.1-8B-Instruct"} 0.41
vllm:num_preemptions_total{model_name="meta-llama/Llama-3.1-8B-Instruct"} 7.0
python_gc_objects_collected_total{generation="0"} 1234.0
"""
# vLLM's v1 engine: an engine label per engine (summed), kv_cache_usage_perc.
VLLM_V1 = """\
vllm:num_requests_running{engine="0",model_name="m"} 1.0
vllm:num_requests_running{engine="1",model_name="m"} 2.0
vllm:num_requests_waiting{engine="0",model_name="m"} 0.0
vllm:num_requests_waiting{engine="1",model_name="m"} 1.0
vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.2
vllm:kv_cache_usage_perc{engine="1",model_name="m"} 0.6
vllm:generation_tokens_total{engine="0",model_name="m"} 100.0
vllm:generation_tokens_total{engine="1",model_name="m"} 23.0
vllm:generation_tokens_created{engine="0",model_name="m"} 1.7e9
"""


@pytest.mark.parametrize(("text", "load"), [
    (VLLM_V0, ServerLoad(running=3, waiting=2, cache_use=0.41)),
    (VLLM_V1, ServerLoad(running=3, waiting=1, cache_use=0.6, generated=123.0)),
    ("vllm:num_requests_running 4\n", ServerLoad(running=4)),
    ("", None), ("# nothing here\nfoo 1\n", None),
    ('vllm:num_requests_running{a="b"} NaN\n', None), ("vllm:num_requests_running{a=\"b\"}\n", None),
    ('vllm:num_requests_running{a="b"} -3\n', None), ("vllm:num_requests_running{broken 2\n", None),
])
def test_vllm_metrics(text: str, load: ServerLoad | None) -> None:
    assert parse_vllm_metrics(text) == load


@pytest.mark.parametrize(("data", "load"), [
    ([{"id": 0, "is_processing": True}, {"id": 1, "is_processing": False}], ServerLoad(running=1, slots=2)),
    ([{"id": 0, "state": 1}], ServerLoad(running=1, slots=1)),  # older builds: state 1 = processing
    ([{"id": 0, "state": 0}], ServerLoad(running=0, slots=1)),
    ([], None), ({"error": {"code": 501}}, None), ([1, 2], None), (None, None),
])
def test_llamacpp_slots(data: Any, load: ServerLoad | None) -> None:
    assert parse_llamacpp_slots(data) == load


@pytest.mark.parametrize(("load", "overloaded"), [
    (ServerLoad(running=9), False), (ServerLoad(running=0, waiting=1), True),
    (ServerLoad(running=1, cache_use=0.96), True), (ServerLoad(running=1, slots=1), True),
    (ServerLoad(running=1, slots=2), False),
])
def test_overloaded(load: ServerLoad, overloaded: bool) -> None:
    assert load.overloaded is overloaded


def test_our_leases_fill_a_servers_slots_before_its_figure_says_so() -> None:
    assert MemberLoad(in_flight=2, server=ServerLoad(running=0, slots=2)).overloaded
    assert not MemberLoad(in_flight=5).overloaded  # no figure: nothing says it has no room


@pytest.mark.parametrize("raw", [b"junk", b"[]", b'{"waiting": 1}', b'{"running": "x"}'])
def test_a_foreign_stored_figure_is_ignored(raw: bytes) -> None:
    assert ServerLoad.from_json(raw) is None


def test_store_round_trip_with_leases_in_one_read_and_figures_expire(any_redis: redis.Redis,
                                                                    clock: FrozenClock) -> None:
    keys = Keys("t")
    store = LoadStore(any_redis, keys)
    admitter = Admitter(any_redis, keys)
    admission = admitter.admit("a", "job-1", tokens=1, limits=Limits(), lease=60,
                               breaker=breaker_config(load_settings(_env_file=None)))
    assert admission.allowed
    ttl = load_ttl(2.0)
    store.write({"a": ServerLoad(running=5, waiting=1, cache_use=0.3), "b": ServerLoad(running=1, slots=1)}, ttl=ttl)
    assert store.read(["a", "b", "c"]) == {
        "a": MemberLoad(in_flight=1, server=ServerLoad(running=5, waiting=1, cache_use=0.3)),
        "b": MemberLoad(in_flight=0, server=ServerLoad(running=1, slots=1)),
        "c": MemberLoad(),
    }
    clock.sleep(ttl + 0.1)
    assert store.read(["a", "b"]) == {"a": MemberLoad(in_flight=1), "b": MemberLoad()}
    assert store.read([]) == {}


def test_only_a_moving_token_counter_is_progress() -> None:
    before = {"a": ServerLoad(running=2, generated=10.0), "b": ServerLoad(running=2, generated=10.0),
              "c": ServerLoad(running=2), "d": ServerLoad(running=2, generated=10.0)}
    now = {"a": ServerLoad(running=2, generated=15.0), "b": ServerLoad(running=2, generated=10.0),
           "c": ServerLoad(running=2, generated=5.0), "d": ServerLoad(running=0),
           "e": ServerLoad(running=1, generated=3.0)}
    # a moved; b stood still (running requests alone prove nothing: a hung engine keeps its gauge);
    # c and e have nothing to compare with; d reports no counter now
    assert progressed(before, now) == ["a"]


def test_stored_figures_alone(any_redis: redis.Redis) -> None:
    store = LoadStore(any_redis, Keys("t"))
    store.write({"a": ServerLoad(running=1, generated=7.0)}, ttl=10)
    any_redis.set(Keys("t").server_load("b"), b"junk")
    assert store.figures(["a", "b", "c"]) == {"a": ServerLoad(running=1, generated=7.0)}


def test_status_rows_show_each_servers_figure(any_redis: redis.Redis) -> None:
    keys = Keys("t")
    store = LoadStore(any_redis, keys)
    store.write({"a": ServerLoad(running=2, waiting=1, cache_use=0.5)}, ttl=10)
    pipe = any_redis.pipeline(transaction=False)
    store.ask_figures(pipe, ["a", "b"])
    loads = store.decode_figures(["a", "b"], pipe.execute()[0])
    records = {e: EndpointRecord(Endpoint(id=e, chat_url=f"http://{e}/v1/chat/completions", model="m", model_name="m",
                                          source="openai", kind="vllm"), "openai:x", 0.0, 0.0) for e in ("a", "b")}
    snap = Snapshot(records=records, health={e: Health(state="healthy") for e in records}, pin=None, selection=None)
    rows = {r["deploy_id"]: r for r in endpoint_rows(snap, checks_enabled=True, loads=loads)}
    assert rows["a"]["server_load"] == {"running": 2, "waiting": 1, "cache_use": 0.5, "slots": None, "generated": None}
    assert rows["b"]["server_load"] is None and rows["a"]["kind"] == "vllm"


def test_the_status_table_shows_kind_and_server_load() -> None:
    base = {"is_current": False, "is_pinned": False, "rank": 0, "model_name": "m", "source": "openai",
            "status": "starting", "latency": None, "consecutive_failures": 0, "last_error": None, "breaker": None}
    rows = [{**base, "deploy_id": "a", "kind": "vllm",
             "server_load": asdict(ServerLoad(running=3, waiting=2, cache_use=0.42))},
            {**base, "deploy_id": "b", "kind": "llamacpp", "server_load": asdict(ServerLoad(running=1, slots=2))},
            {**base, "deploy_id": "c"}]
    header, a, b, c = render_table(rows).splitlines()
    assert "kind" in header and "server load" in header
    assert "vllm" in a and "3+2 kv 42%" in a and "starting" in a
    assert "llamacpp" in b and "1+0/2 slots" in b
    assert c.split()[3:5] == ["openai", "-"] and c.split()[8] == "-"  # no kind, no figure
