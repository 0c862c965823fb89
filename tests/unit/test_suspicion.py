"""Hung endpoints in Redis: TTFT histograms, suspicion in admit.lua, trials, the concurrency share.

Run here on fakeredis with a frozen clock, and again on a real Redis by
tests/integration/real_redis/test_suspicion.py. `clock.within(s)` marks steps that must land
within `s` seconds of Redis time for the assertions after them to hold.
"""

from __future__ import annotations

import pytest
import redis

from llmpool.admission import Admission, Admitter, Limits, limits_for
from llmpool.breaker import BreakerConfig
from llmpool.endpoints import Endpoint
from llmpool.gate import RedisGate
from llmpool.keys import Keys
from llmpool.settings import load_settings
from llmpool.ttft import TtftConfig, bucket_bound, bucket_of, percentile
from tests.conftest import Clock

KEYS = Keys("t")
E = "ep1"
FREE = Limits(period=1.0)
BREAKER = BreakerConfig(max_failures=3, window=10, min_calls=100, open_wait=0.05, open_wait_max=1, trial_lease=5)
# Usual TTFT 0.02 s: suspicion after max(3 x p99, 0.3 s); a call waits max(4 x p99, 0.5 s).
TTFT = TtftConfig(window=60, min_samples=5, timeout_factor=4, timeout_floor=0.5, timeout_ceiling=20,
                  suspect_factor=3, suspect_floor=0.3, suspect_max=2.0, suspect_wait=0.2)


@pytest.fixture
def client(any_redis: redis.Redis) -> redis.Redis:
    return any_redis


@pytest.fixture
def adm(client: redis.Redis) -> Admitter:
    return Admitter(client, KEYS)


def admit(adm: Admitter, job: str, *, lease: float = 5.0, config: TtftConfig = TTFT,
          limits: Limits = FREE) -> Admission:
    return adm.admit(E, job, tokens=0, limits=limits, breaker=BREAKER, lease=lease, ttft=config)


def settle(adm: Admitter, job: str, ticket: Admission, outcome: str = "success") -> str:
    return adm.settle(E, job, outcome=outcome, trial=ticket.trial, reserved_tokens=0,  # type: ignore[arg-type]
                      used_tokens=None, duration=0.1, limits=FREE, breaker=BREAKER, ttft=TTFT)


def answer(adm: Admitter, job: str, ttft: float, *, config: TtftConfig = TTFT) -> Admission:
    """One whole call: admitted, a first token after `ttft` (as the worker measured it), answered."""
    ticket = admit(adm, job, config=config)
    assert ticket.allowed, ticket
    adm.first_token(E, job, ttft, ttft=config)
    settle(adm, job, ticket)
    return ticket


def warm(adm: Admitter, ttft: float = 0.02, n: int = 5, config: TtftConfig = TTFT) -> None:
    for i in range(n):
        answer(adm, f"warm{i}", ttft, config=config)


def figures(adm: Admitter) -> dict:
    return adm.stats([E], ttft=TTFT)[E]


# --- the histogram ---------------------------------------------------------------------------

def test_first_tokens_build_a_histogram_with_its_percentiles(adm: Admitter, client: redis.Redis) -> None:
    ttfts = [0.02] * 18 + [0.3, 1.5]
    for n, seconds in enumerate(ttfts):
        adm.first_token(E, f"j{n}", seconds, ttft=TTFT)
    counts = [0] * 48
    for seconds in ttfts:
        counts[bucket_of(seconds)] += 1
    t = figures(adm)["ttft"]
    assert t["samples"] == 20 and t["warm"]
    assert (t["p50"], t["p95"], t["p99"]) == pytest.approx(
        (percentile(counts, 0.5), percentile(counts, 0.95), percentile(counts, 0.99)), abs=1e-6)  # %.6f
    assert t["p50"] == pytest.approx(bucket_bound(bucket_of(0.02)), abs=1e-6) and 0.02 <= t["p50"] < 0.025
    assert 1.5 <= t["p99"] < 1.5 * 1.25  # a bucket's upper bound: never below, at most 25% above
    assert 0 < client.pttl(KEYS.ttft(E)) <= 2 * TTFT.window * 1000


def test_the_histogram_forgets_generations_older_than_one_window(adm: Admitter, client: redis.Redis,
                                                                  clock: Clock) -> None:
    short = TtftConfig(window=0.2, min_samples=1)
    adm.first_token(E, "old", 0.02, ttft=short)
    epoch = int(client.hget(KEYS.ttft(E), "epoch"))
    clock.sleep(0.2)
    after = adm.first_token(E, "next", 0.02, ttft=short)
    moved = int(client.hget(KEYS.ttft(E), "epoch")) - epoch
    assert moved >= 1
    assert after == (2 if moved == 1 else 1)  # the previous generation still counts, an older one not
    clock.sleep(0.45)  # two windows later: both generations are gone
    assert adm.first_token(E, "late", 0.02, ttft=short) == 1


def test_first_token_and_settle_end_a_calls_wait(adm: Admitter) -> None:
    a, b = admit(adm, "a"), admit(adm, "b")
    assert figures(adm)["ttft"]["awaiting_first_token"] == 2
    adm.first_token(E, "a", 0.1, ttft=TTFT)
    assert figures(adm)["ttft"]["awaiting_first_token"] == 1
    settle(adm, "b", b, "failure")
    settle(adm, "a", a)
    assert figures(adm)["ttft"]["awaiting_first_token"] == 0


# --- the adaptive first-token timeout on the ticket ------------------------------------------

def test_a_cold_endpoint_waits_the_ceiling_a_warm_one_its_own_timeout(adm: Admitter) -> None:
    cold = admit(adm, "first")
    assert (cold.first_token_timeout, cold.hedge_after) == (None, None)  # AGENT_FIRST_TOKEN_TIMEOUT as it was
    settle(adm, "first", cold)
    warm(adm, 0.02)
    fast = admit(adm, "fast")
    assert fast.first_token_timeout == 0.5  # 4 x p99 (0.02..0.025 s) is below the floor
    assert fast.hedge_after is not None and 0.02 <= fast.hedge_after < 0.025
    settle(adm, "fast", fast)
    warm(adm, 1.0, n=20)  # the endpoint slows down: its own history says how long is normal
    slow = admit(adm, "slow")
    assert slow.first_token_timeout is not None and 4.0 <= slow.first_token_timeout < 5.0


# --- suspicion --------------------------------------------------------------------------------

def test_a_call_waiting_far_past_its_usual_ttft_with_nothing_moving_makes_the_endpoint_suspect(
        adm: Admitter, clock: Clock) -> None:
    warm(adm)
    stuck = admit(adm, "stuck")
    assert stuck.allowed
    clock.sleep(0.31)  # past 0.3 s (the floor; 3 x p99 is less) since the last progress and the call
    with clock.within(TTFT.suspect_wait):
        refused = admit(adm, "next")
        again = admit(adm, "after")
        s = figures(adm)
    assert (refused.allowed, refused.reason) == (False, "suspect")
    assert refused.retry_after == pytest.approx(TTFT.suspect_wait)
    assert (again.reason, s["state"], s["suspect"], s["suspicions"]) == ("suspect", "open", True, 1)
    assert s["ttft"]["awaiting_first_token"] == 1 and s["ttft"]["longest_wait"] > 0.3
    clock.sleep(TTFT.suspect_wait)
    trial = admit(adm, "trial")
    assert (trial.allowed, trial.trial, trial.first_token_timeout) == (True, True, 0.5)


def test_a_slow_endpoint_still_answering_others_is_not_suspected(adm: Admitter, clock: Clock) -> None:
    warm(adm)
    admit(adm, "slow")
    clock.sleep(0.2)
    answer(adm, "other", 0.02)  # the server still answers: it is busy, not hung
    clock.sleep(0.2)
    with clock.within(0.3):  # inside 0.3 s of the other answer
        ticket = admit(adm, "next")
    assert (ticket.allowed, figures(adm)["suspicions"]) == (True, 0)


def test_a_wait_within_the_endpoints_history_is_not_suspected(adm: Admitter, clock: Clock) -> None:
    warm(adm, 0.2)  # p99 0.2..0.25 s: suspicion only after 3 x p99, 0.6..0.75 s
    with clock.within(0.6):
        admit(adm, "slow")
        clock.sleep(0.5)  # far past the 0.3 s floor, still within 3 x its own p99
        within = admit(adm, "next")
    assert within.allowed
    clock.sleep(0.3)
    assert admit(adm, "later").reason == "suspect"


def test_the_servers_own_load_signal_counts_as_progress(adm: Admitter, clock: Clock) -> None:
    warm(adm)
    admit(adm, "queued")
    clock.sleep(0.2)
    adm.note_progress(E, ttft=TTFT)  # e.g. vLLM's metrics say it is generating
    clock.sleep(0.2)
    with clock.within(0.3):
        assert admit(adm, "next").allowed
    clock.sleep(0.3)
    assert admit(adm, "later").reason == "suspect"


def test_calls_each_cut_short_still_add_up_to_a_hang(adm: Admitter, clock: Clock) -> None:
    """Hedged calls: each is cancelled (settled neutral) 0.12 s in with no token; none waits 0.3 s."""
    warm(adm)
    with clock.within(0.3):  # c2 is admitted before 0.3 s of silence
        c0 = admit(adm, "c0")
        clock.sleep(0.12)
        c1 = admit(adm, "c1")
        settle(adm, "c0", c0, "neutral")  # its hedge answered first
        clock.sleep(0.12)
        c2 = admit(adm, "c2")
        settle(adm, "c1", c1, "neutral")
    assert c0.allowed and c1.allowed and c2.allowed
    clock.sleep(0.12)
    assert admit(adm, "c3").reason == "suspect"  # unanswered for 0.36 s, one call after another


def test_old_silence_on_an_idle_endpoint_proves_nothing(adm: Admitter, clock: Clock) -> None:
    warm(adm)
    cut = admit(adm, "cut")
    clock.sleep(0.12)
    settle(adm, "cut", cut, "neutral")
    clock.sleep(0.5)  # idle: nobody asked it anything
    with clock.within(0.3):
        assert admit(adm, "new").allowed
        assert admit(adm, "next").allowed  # "new" waits, but the silence since "cut" is broken


def test_a_call_that_never_left_this_process_is_no_evidence(adm: Admitter, client: redis.Redis,
                                                             clock: Clock) -> None:
    warm(adm)
    short = admit(adm, "short")
    clock.sleep(0.5)  # it waited for a free connection of our own pool, then gave up (LocalShortage)
    adm.settle(E, "short", outcome="neutral", trial=short.trial, reserved_tokens=5, used_tokens=0, duration=0.5,
               limits=FREE, breaker=BREAKER, ttft=TTFT)
    assert client.hget(KEYS.ttft(E), "unanswered_since") is None


def test_a_quick_error_answer_is_no_evidence(adm: Admitter, client: redis.Redis, clock: Clock) -> None:
    warm(adm)
    with clock.within(0.02):  # within the endpoint's usual TTFT
        quick = admit(adm, "quick")
        settle(adm, "quick", quick, "neutral")  # e.g. a 400: no token, but an answer at once
    assert client.hget(KEYS.ttft(E), "unanswered_since") is None


def test_a_cold_endpoint_is_suspected_only_after_the_max(adm: Admitter, clock: Clock) -> None:
    cold = TtftConfig(min_samples=5, suspect_floor=0.1, suspect_max=0.6, suspect_wait=0.2)
    assert admit(adm, "stuck", config=cold).allowed
    with clock.within(0.6):
        clock.sleep(0.4)  # past the floor, but nothing is known of this endpoint
        assert admit(adm, "next", config=cold).allowed
    clock.sleep(0.25)
    assert admit(adm, "later", config=cold).reason == "suspect"


def test_a_dead_workers_call_is_no_evidence(adm: Admitter, clock: Clock) -> None:
    warm(adm)
    admit(adm, "killed", lease=0.1)  # its worker dies: nobody renews the lease
    clock.sleep(0.35)
    ticket = admit(adm, "next")
    assert ticket.allowed and figures(adm)["suspicions"] == 0
    assert figures(adm)["ttft"]["awaiting_first_token"] == 1  # "next"; the dead call's mark is gone


def test_failed_trials_reopen_and_give_the_next_trial_a_longer_first_token_wait(adm: Admitter,
                                                                               clock: Clock) -> None:
    warm(adm)
    admit(adm, "stuck")
    clock.sleep(0.31)
    assert admit(adm, "detects").reason == "suspect"
    waits = []
    for n in range(2):
        clock.sleep(figures(adm)["open_wait"])
        trial = admit(adm, f"trial{n}")
        assert trial.trial
        waits.append(trial.first_token_timeout)
        assert settle(adm, f"trial{n}", trial, "failure") == "open"
    assert waits == [0.5, 1.0]
    s = figures(adm)
    assert (s["suspect"], s["failed_trials"], s["open_wait"]) == (True, 2, 0.8)
    clock.sleep(0.8)
    trial = admit(adm, "good")
    assert trial.first_token_timeout == 2.0
    adm.first_token(E, "good", 0.02, ttft=TTFT)
    assert settle(adm, "good", trial) == "closed"
    s = figures(adm)
    assert (s["state"], s["suspect"], s["failed_trials"], s["suspicions"]) == ("closed", False, 0, 1)
    assert admit(adm, "back").allowed  # the old stuck call still waits, but the endpoint moves again


def test_a_failure_trip_is_not_a_suspicion(adm: Admitter) -> None:
    for n in range(BREAKER.max_failures):
        settle(adm, f"f{n}", admit(adm, f"f{n}"), "failure")
    s = figures(adm)
    assert (s["state"], s["suspect"], s["suspicions"]) == ("open", False, 0)
    assert admit(adm, "next").reason == "open"


def test_the_lease_refresh_keeps_a_waiting_calls_mark(adm: Admitter, client: redis.Redis, clock: Clock) -> None:
    with clock.within(0.1):
        admit(adm, "long", lease=0.1)
        assert adm.refresh_lease(E, "long", 5.0)
    assert 4000 < client.pttl(KEYS.awaiting(E)) <= 5000


def test_stats_and_reset_cover_the_new_keys(adm: Admitter, client: redis.Redis) -> None:
    warm(adm)
    admit(adm, "waiting")
    assert client.exists(KEYS.awaiting(E), KEYS.ttft(E)) == 2
    adm.reset(E)
    assert client.keys("*") == []


# --- the concurrency share --------------------------------------------------------------------

def endpoint(id_: str, model_name: str) -> Endpoint:
    return Endpoint(id=id_, chat_url="http://x/v1/chat/completions", model=model_name, model_name=model_name,
                    source="discovered")


@pytest.mark.parametrize(("env", "slots", "cap"), [
    ({}, 64, 32),  # AGENT_ENDPOINT_SHARE 0.5 of the fleet's chat slots
    ({}, 0, 0),  # slots unknown, or one endpoint selected: no share
    ({}, 1, 1),  # never below one call
    ({"agent_endpoint_share": 0.25}, 64, 16),
    ({"agent_endpoint_share": 1.0}, 64, 0),  # the whole fleet: no cap
    ({"agent_endpoint_max_concurrency": 8}, 64, 8),  # an explicit cap wins over the share
    ({"agent_endpoint_limits": '{"70b": {"share": 0.125}}'}, 64, 8),
    ({"agent_endpoint_limits": '{"70b": {"max_concurrency": 40}}'}, 64, 40),
])
def test_an_endpoint_may_hold_its_share_of_the_fleets_chat_slots(env: dict, slots: int, cap: int) -> None:
    settings = load_settings(**env)
    assert limits_for(endpoint("a", "llama-3.1-70b"), settings, fleet_slots=slots).max_concurrency == cap


def test_a_share_refusal_is_a_concurrency_refusal(adm: Admitter) -> None:
    share = limits_for(endpoint("a", "llama-3.1-70b"), load_settings(), fleet_slots=4)
    assert [admit(adm, f"j{n}", limits=share).allowed for n in range(3)] == [True, True, False]
    assert admit(adm, "j9", limits=share).reason == "concurrency"


# --- the gate in front of it (llmpool.gate) ---------------------------------------------------

def _gate(client: redis.Redis, **settings: object) -> RedisGate:
    values = {"agent_ttft_min_samples": TTFT.min_samples, "agent_first_token_floor": TTFT.timeout_floor,
              "agent_first_token_timeout": TTFT.timeout_ceiling, "agent_suspect_floor": TTFT.suspect_floor,
              "agent_suspect_max": TTFT.suspect_max, "agent_suspect_wait": TTFT.suspect_wait, **settings}
    return RedisGate(Admitter(client, KEYS), load_settings(**values), fleet_slots=lambda: 4)


def test_the_gate_records_first_tokens_and_remembers_a_suspicion(client: redis.Redis, clock: Clock) -> None:
    gate, ep = _gate(client), endpoint(E, "llama-3.1-70b")
    for n in range(TTFT.min_samples):
        ticket = gate.admit(ep, f"w{n}", tokens=1, budget=60)
        gate.first_token(ep, f"w{n}", 0.02)
        gate.settle(ep, f"w{n}", ticket, outcome="success", reserved=1, used=1, duration=0.05)
    assert gate.admit(ep, "stuck", tokens=1, budget=60).first_token_timeout == TTFT.timeout_floor
    clock.sleep(0.31)
    first = gate.admit(ep, "j1", tokens=1, budget=60)
    cached = gate.admit(ep, "j2", tokens=1, budget=60)  # answered by this process without Redis
    assert (first.reason, cached.reason) == ("suspect", "suspect") and 0 < cached.retry_after <= first.retry_after


def test_the_gate_holds_an_endpoint_to_its_share_and_survives_a_lost_first_token(client: redis.Redis) -> None:
    gate, ep = _gate(client), endpoint(E, "llama-3.1-70b")
    tickets = [gate.admit(ep, f"j{n}", tokens=1, budget=60) for n in range(3)]
    assert [t.allowed for t in tickets] == [True, True, False]  # half of the 4 slots fleet_slots says
    assert tickets[2].reason == "concurrency"

    def redis_away(*_args: object, **_kwargs: object) -> int:
        raise redis.ConnectionError("Redis went away")

    gate.admitter.first_token = redis_away  # type: ignore[method-assign]
    gate.first_token(ep, "j0", 0.1)  # logged, not raised: the answer streaming in matters more
