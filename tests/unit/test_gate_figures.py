"""What /status, `llmpool status` and a metrics exporter show of hung-endpoint handling."""

from __future__ import annotations

import math

import redis

from llmpool.admission import Admitter
from llmpool.endpoints import Endpoint
from llmpool.gate_figures import exported_numbers, read_gate_figures, share_base
from llmpool.settings import load_settings
from llmpool.status_view import render_table
from tests.conftest import Clock
from tests.unit.test_suspicion import KEYS, TTFT, E, admit, warm

CHAT = ["chat.high", "chat.default", "chat.low"]


def _endpoint(id_: str) -> Endpoint:
    return Endpoint(id=id_, chat_url=f"http://{id_}/v1/chat/completions", model="m", model_name="llama-3.1-70b",
                    source="discovered")


def _row(id_: str, breaker: dict) -> dict:
    return {"is_current": False, "is_pinned": False, "rank": 0, "deploy_id": id_, "model_name": "llama-3.1-70b",
            "source": "discovered", "status": "healthy", "latency": None, "consecutive_failures": 0,
            "last_error": None, "breaker": breaker}


def test_a_suspected_endpoint_shows_as_such_with_its_timeouts_and_share(any_redis: redis.Redis,
                                                                       clock: Clock) -> None:
    adm = Admitter(any_redis, KEYS)
    warm(adm)
    admit(adm, "stuck")
    clock.sleep(0.31)
    assert admit(adm, "detects").reason == "suspect"
    settings = load_settings(agent_ttft_min_samples=TTFT.min_samples, agent_first_token_floor=TTFT.timeout_floor,
                             agent_first_token_timeout=TTFT.timeout_ceiling, agent_suspect_floor=TTFT.suspect_floor,
                             agent_suspect_max=TTFT.suspect_max)
    slots = share_base(2, [{"concurrency": 64, "queues": CHAT}, {"concurrency": 4, "queues": ["control"]}])
    figures = read_gate_figures(adm, settings, [_endpoint(E), _endpoint("cold")], fleet_slots=slots)
    hung, cold = figures[E], figures["cold"]
    assert (hung["state"], hung["suspect"], hung["suspicions"], hung["max_concurrency"]) == ("open", True, 1, 32)
    assert hung["ttft"]["first_token_timeout"] == 0.5 and hung["ttft"]["awaiting_first_token"] == 1
    assert (cold["suspect"], cold["ttft"]["first_token_timeout"], cold["ttft"]["p95"]) == (False, 20.0, None)
    numbers = exported_numbers(figures)
    assert (numbers[E]["suspect"], numbers[E]["suspicions_total"], numbers[E]["max_concurrency"]) == (1.0, 1.0, 32.0)
    assert numbers[E]["longest_first_token_wait_seconds"] > 0.3
    assert math.isnan(numbers["cold"]["ttft_p95_seconds"]) and math.isinf(numbers["cold"]["seconds_since_progress"])
    table = render_table([_row(E, hung), _row("cold", cold)]).splitlines()
    assert "ttft p95" in table[0] and "1st-token t/o" in table[0]
    assert "suspect" in table[1] and "1/32" in table[1] and "0.50s" in table[1]
    assert "closed" in table[2] and "20s" in table[2]


def test_no_share_while_one_endpoint_is_selected() -> None:
    assert share_base(1, [{"concurrency": 64, "queues": CHAT}]) == 0
