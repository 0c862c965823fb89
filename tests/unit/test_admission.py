"""Breaker, concurrency leases, GCRA rates and pauses: the Lua scripts on fakeredis (here) and on a real
Redis (tests/integration/real_redis/test_admission.py runs these very tests).

Every wait is measured by Redis' clock. Here that clock is frozen (conftest `clock`): it moves only
by `clock.sleep`, so the numbers asserted are exact whatever the machine's load. `clock.within(s)`
marks steps that must land within `s` seconds of Redis time for the assertions after it to hold.
"""

from __future__ import annotations

import pytest
import redis

from llmpool.admission import POLL_CAP, Admission, Admitter, Limits, Outcome, limits_for
from llmpool.breaker import BreakerConfig, breaker_config
from llmpool.endpoints import Endpoint
from llmpool.errors import ConfigError
from llmpool.keys import Keys
from llmpool.settings import load_settings
from tests.conftest import Clock

KEYS = Keys("t")
E = "ep1"
FREE = Limits(period=1.0)  # no concurrency cap, no rate limit
BREAKER = BreakerConfig(max_failures=3, window=10, min_calls=100, open_wait=0.05, open_wait_max=1,
                        trial_lease=5)


@pytest.fixture
def client(any_redis: redis.Redis) -> redis.Redis:
    return any_redis


@pytest.fixture
def adm(client: redis.Redis) -> Admitter:
    return Admitter(client, KEYS)


def admit(adm: Admitter, job: str, *, limits: Limits = FREE, breaker: BreakerConfig = BREAKER,
          tokens: int = 0, lease: float = 5.0, endpoint: str = E) -> Admission:
    return adm.admit(endpoint, job, tokens=tokens, limits=limits, breaker=breaker, lease=lease)


def settle(adm: Admitter, job: str, outcome: Outcome, *, trial: bool = False, limits: Limits = FREE,
           breaker: BreakerConfig = BREAKER, reserved: int = 0, used: int | None = None,
           duration: float = 0.1) -> str:
    return adm.settle(E, job, outcome=outcome, trial=trial, reserved_tokens=reserved, used_tokens=used,
                      duration=duration, limits=limits, breaker=breaker)


def call(adm: Admitter, job: str, outcome: Outcome, *, breaker: BreakerConfig = BREAKER) -> str:
    """Admit and settle one call; the breaker state after."""
    ticket = admit(adm, job, breaker=breaker)
    assert ticket.allowed, ticket
    return settle(adm, job, outcome, trial=ticket.trial, breaker=breaker)


def trip(adm: Admitter, breaker: BreakerConfig = BREAKER) -> None:
    states = [call(adm, f"fail{n}", "failure", breaker=breaker) for n in range(breaker.max_failures)]
    assert states[-1] == "open"


def stats(adm: Admitter) -> dict:
    return adm.stats([E])[E]


# --- breaker ---------------------------------------------------------------------------------

def test_consecutive_failures_open_the_breaker(adm: Admitter) -> None:
    assert [call(adm, f"a{n}", "failure") for n in range(2)] == ["closed", "closed"]
    assert call(adm, "ok", "success") == "closed"  # a success starts the count again
    assert [call(adm, f"b{n}", "failure") for n in range(3)] == ["closed", "closed", "open"]
    s = stats(adm)
    assert (s["trips"], s["calls"], s["failures"], s["open_wait"]) == (1, 6, 5, 0.05)
    assert s["success_rate"] == pytest.approx(1 / 6)


def test_a_failing_endpoint_gets_no_more_calls_in_flight_than_failures_it_has_left(adm: Admitter) -> None:
    assert call(adm, "f1", "failure") == "closed"  # 1 of 3 failures: 2 may be in flight
    assert admit(adm, "p1").allowed and admit(adm, "p2").allowed
    held = admit(adm, "p3")
    assert (held.allowed, held.reason) == (False, "probation") and 0 < held.retry_after <= POLL_CAP
    assert admit(adm, "p1").allowed  # a job re-admitted keeps its own slot
    assert settle(adm, "p1", "failure") == "closed"  # 2 of 3: now only 1 in flight, p2 holds it
    assert not admit(adm, "p4").allowed
    assert settle(adm, "p2", "success") == "closed"  # a success ends the probation
    assert all(admit(adm, f"q{n}").allowed for n in range(5))


def test_failure_rate_opens_only_with_enough_calls(adm: Admitter) -> None:
    rate = BreakerConfig(max_failures=100, window=10, failure_rate=0.5, min_calls=4, open_wait=1)
    # 2 of 3 failed but fewer than min_calls; then a success never trips; then 3 of 5 trips.
    outcomes: list[Outcome] = ["success", "failure", "failure", "success", "failure"]
    states = [call(adm, f"j{n}", o, breaker=rate) for n, o in enumerate(outcomes)]
    assert states == ["closed", "closed", "closed", "closed", "open"]


def test_failure_window_forgets_old_calls(adm: Admitter, clock: Clock) -> None:
    rate = BreakerConfig(max_failures=100, window=0.3, failure_rate=0.5, min_calls=3, open_wait=1)
    call(adm, "old1", "failure", breaker=rate)
    call(adm, "old2", "failure", breaker=rate)
    clock.sleep(0.35)
    with clock.within(0.3):  # the new calls, and their count, in one window
        states = [call(adm, f"new{n}", o, breaker=rate) for n, o in enumerate(["success", "success", "failure"])]
        counted = stats(adm)
    assert states == ["closed", "closed", "closed"]  # 1 of 3 in the window, not 3 of 5
    assert (counted["calls"], counted["failures"]) == (3, 1)


def test_open_breaker_denies_until_its_wait_is_over(adm: Admitter, clock: Clock) -> None:
    slow = BreakerConfig(max_failures=1, open_wait=0.3)
    with clock.within(0.1):
        trip(adm, slow)
        denied = admit(adm, "j", breaker=slow)
        retry_in = stats(adm)["retry_in"]
    assert (denied.allowed, denied.trial, denied.reason) == (False, False, "open")
    assert 0.2 < denied.retry_after <= 0.3
    assert 0.2 < retry_in <= 0.3
    clock.sleep(0.31)
    assert admit(adm, "j", breaker=slow).trial


def test_half_open_lets_exactly_one_trial_through(adm: Admitter, clock: Clock) -> None:
    trip(adm)
    clock.sleep(0.06)
    assert stats(adm)["state"] == "half_open"
    first = admit(adm, "t1")
    assert (first.allowed, first.trial, first.reason) == (True, True, "ok")
    busy = [admit(adm, f"other{n}") for n in range(3)]
    assert {(a.allowed, a.reason) for a in busy} == {(False, "trial_busy")}
    assert all(0 < a.retry_after <= POLL_CAP for a in busy)
    again = admit(adm, "t1")  # a redelivery of the trial job is still the trial, counted once
    assert (again.allowed, again.trial) == (True, True)
    assert adm.in_flight([E]) == {E: 1}
    assert stats(adm)["trial_in_flight"] is True


def test_trial_success_closes_and_resets_the_wait(adm: Admitter, clock: Clock) -> None:
    trip(adm)
    clock.sleep(0.06)
    assert call(adm, "trial1", "failure") == "open"
    assert stats(adm)["open_wait"] == 0.1
    clock.sleep(0.11)
    assert call(adm, "trial2", "success") == "closed"
    s = stats(adm)
    assert (s["state"], s["open_wait"], s["consecutive_failures"], s["calls"], s["trips"]) == (
        "closed", 0.05, 0, 0, 2)
    assert admit(adm, "after").trial is False
    settle(adm, "after", "success")
    trip(adm)  # a later trip starts from the base wait again
    assert stats(adm)["open_wait"] == 0.05


def test_failed_trials_double_the_wait_up_to_the_cap(adm: Admitter, clock: Clock) -> None:
    capped = BreakerConfig(max_failures=1, open_wait=0.02, open_wait_max=0.05)
    trip(adm, capped)
    waits = []
    for n in range(3):
        clock.sleep(stats(adm)["open_wait"] + 0.01)
        assert call(adm, f"trial{n}", "failure", breaker=capped) == "open"
        waits.append(stats(adm)["open_wait"])
    assert waits == [0.04, 0.05, 0.05]
    assert stats(adm)["trips"] == 4


def test_an_expired_trial_lease_frees_the_trial(adm: Admitter, clock: Clock) -> None:
    short = BreakerConfig(max_failures=1, open_wait=0.02, trial_lease=0.2)
    trip(adm, short)
    clock.sleep(0.03)
    with clock.within(0.2):  # inside the dead trial's lease
        assert admit(adm, "dead", breaker=short).trial
        busy = admit(adm, "next", breaker=short)
    assert busy.reason == "trial_busy"
    clock.sleep(0.21)  # the trial's worker died: its lease runs out
    with clock.within(0.2):  # inside the new trial's lease
        assert admit(adm, "next", breaker=short).trial
        # The dead trial's late answer cannot move the breaker: another job holds the trial now.
        late = settle(adm, "dead", "failure", trial=True, breaker=short)
        closed = settle(adm, "next", "success", trial=True, breaker=short)
    assert (late, closed) == ("half_open", "closed")


def test_neutral_outcome_charges_nothing(adm: Admitter) -> None:
    call(adm, "f1", "failure")
    call(adm, "f2", "failure")
    assert call(adm, "caller-error", "neutral") == "closed"
    assert (stats(adm)["calls"], stats(adm)["consecutive_failures"]) == (2, 2)
    assert call(adm, "f3", "failure") == "open"


def test_neutral_trial_releases_the_trial_without_deciding(adm: Admitter, clock: Clock) -> None:
    trip(adm)
    clock.sleep(0.06)
    assert call(adm, "trial", "neutral") == "half_open"
    s = stats(adm)
    assert (s["state"], s["trips"], s["open_wait"], s["trial_in_flight"]) == ("half_open", 1, 0.05, False)
    assert admit(adm, "another").trial


def test_slow_success_counts_as_a_failure_when_asked(adm: Admitter) -> None:
    slow = BreakerConfig(max_failures=1, slow_call=1.0)
    admit(adm, "fast", breaker=slow)
    assert settle(adm, "fast", "success", breaker=slow, duration=0.9) == "closed"
    admit(adm, "slow", breaker=slow)
    assert settle(adm, "slow", "success", breaker=slow, duration=1.5) == "open"


def test_calls_in_flight_when_it_opened_do_not_move_it(adm: Admitter) -> None:
    patient = BreakerConfig(max_failures=3, open_wait=10)
    # Four calls admitted before any failure (probation only limits calls after one); three fail.
    tickets = {job: admit(adm, job, breaker=patient) for job in ("s1", "s2", "s3", "straggler")}
    assert all(t.allowed for t in tickets.values())
    assert [settle(adm, job, "failure", breaker=patient) for job in ("s1", "s2", "s3")][-1] == "open"
    assert settle(adm, "straggler", "success", trial=tickets["straggler"].trial, breaker=patient) == "open"
    assert settle(adm, "straggler2", "failure", breaker=patient) == "open"
    assert stats(adm)["trips"] == 1


# --- concurrency leases ----------------------------------------------------------------------

def test_concurrency_cap_and_release(adm: Admitter) -> None:
    two = Limits(max_concurrency=2, period=1)
    assert admit(adm, "j1", limits=two).allowed and admit(adm, "j2", limits=two).allowed
    full = admit(adm, "j3", limits=two)
    assert (full.allowed, full.reason, full.retry_after) == (False, "concurrency", POLL_CAP)
    settle(adm, "j1", "success", limits=two)
    assert admit(adm, "j3", limits=two).allowed
    assert adm.in_flight([E, "idle"]) == {E: 2, "idle": 0}


def test_an_expired_lease_gives_its_slot_back(adm: Admitter, clock: Clock) -> None:
    one = Limits(max_concurrency=1, period=1)
    with clock.within(0.1):  # inside the first lease
        assert admit(adm, "killed", limits=one, lease=0.1).allowed
        full = admit(adm, "j2", limits=one)
    assert full.reason == "concurrency" and 0 < full.retry_after <= 0.1
    clock.sleep(0.11)
    assert adm.in_flight([E]) == {E: 0}  # expired leases are not counted, even before removal
    assert admit(adm, "j2", limits=one).allowed


def test_the_same_job_admitted_twice_holds_one_slot(adm: Admitter) -> None:
    two = Limits(max_concurrency=2, period=1)
    assert admit(adm, "j1", limits=two).allowed and admit(adm, "j1", limits=two).allowed
    assert adm.in_flight([E]) == {E: 1}
    assert admit(adm, "j2", limits=two).allowed


def test_refreshing_a_lease_keeps_a_long_call_its_slot(adm: Admitter, client: redis.Redis, clock: Clock) -> None:
    with clock.within(1.0):  # the refreshed 5 s lease is read before 1 s of it has gone
        with clock.within(0.1):  # refreshed inside the 0.1 s lease
            assert admit(adm, "long", lease=0.1).allowed
            assert adm.refresh_lease(E, "long", 5.0)
        clock.sleep(0.15)
        assert adm.in_flight([E]) == {E: 1}
        left = client.pttl(KEYS.leases(E)) / 1000
    assert 4 < left <= 5
    assert admit(adm, "late", lease=0.05).allowed
    clock.sleep(0.06)
    assert not adm.refresh_lease(E, "late", 5.0)  # expired: its slot may be someone else's now
    assert adm.in_flight([E]) == {E: 1}


def test_refreshing_the_trial_keeps_it(adm: Admitter, clock: Clock) -> None:
    short = BreakerConfig(max_failures=1, open_wait=0.02, trial_lease=0.2)
    trip(adm, short)
    clock.sleep(0.03)
    with clock.within(0.2):  # refreshed inside the 0.2 s trial lease
        assert admit(adm, "trial", breaker=short).trial
        assert adm.refresh_lease(E, "trial", 5.0)
    clock.sleep(0.21)
    assert admit(adm, "other", breaker=short).reason == "trial_busy"


# --- rate limits (GCRA) ----------------------------------------------------------------------

def test_rpm_lets_a_burst_through_then_spaces_calls(adm: Admitter, clock: Clock) -> None:
    rpm = Limits(rpm=5, burst=2, period=1)  # one call per 0.2 s, two at once
    with clock.within(0.1):
        burst = [admit(adm, f"j{n}", limits=rpm).allowed for n in range(2)]
        denied = admit(adm, "j2", limits=rpm)
    assert burst == [True, True]
    assert (denied.allowed, denied.reason) == (False, "rpm")
    assert 0.1 < denied.retry_after <= 0.2
    clock.sleep(denied.retry_after)
    with clock.within(0.2):  # the next one is spaced 0.2 s after this one
        assert admit(adm, "j2", limits=rpm).allowed
        spaced = admit(adm, "j3", limits=rpm)
    assert spaced.reason == "rpm"


def test_tpm_reserves_and_settles_with_real_usage(adm: Admitter, clock: Clock) -> None:
    tpm = Limits(tpm=1000, burst=10, period=10)  # 10 ms per token, burst 100 tokens (1 s)
    assert tpm.token_burst == 100
    with clock.within(0.1):
        assert admit(adm, "j1", limits=tpm, tokens=80).allowed
        denied = admit(adm, "j2", limits=tpm, tokens=30)
        settle(adm, "j1", "success", limits=tpm, reserved=80, used=10)  # 70 tokens come back
        assert admit(adm, "j2", limits=tpm, tokens=30).allowed
        settle(adm, "j2", "success", limits=tpm, reserved=30, used=130)  # an overrun is charged
        over = admit(adm, "j3", limits=tpm, tokens=1)
    assert denied.reason == "tpm" and 0 < denied.retry_after <= 0.1
    assert over.reason == "tpm" and 0.3 < over.retry_after <= 0.41  # 10 + 130 + 1 - 100 tokens


def test_a_call_bigger_than_the_token_burst_passes_when_idle(adm: Admitter, clock: Clock) -> None:
    tpm = Limits(tpm=1000, burst=2, period=1)  # no rpm: token burst = 2/100 of the tpm
    assert tpm.token_burst == 20
    with clock.within(0.18):
        assert admit(adm, "big", limits=tpm, tokens=500).allowed
        after = admit(adm, "small", limits=tpm, tokens=1)
    assert after.reason == "tpm" and 0.3 < after.retry_after <= 0.481  # charged in full


def test_pause_denies_every_admit_until_it_ends(adm: Admitter, clock: Clock) -> None:
    with clock.within(0.1):
        adm.pause(E, 0.3)
        adm.pause(E, 0.05)  # a shorter Retry-After never cuts a longer pause
        paused = admit(adm, "j1")
        paused_for = stats(adm)["paused_for"]
    assert (paused.allowed, paused.reason) == (False, "paused") and 0.2 < paused.retry_after <= 0.3
    assert 0.2 < paused_for <= 0.3
    assert admit(adm, "j1", endpoint="other").allowed
    clock.sleep(0.31)
    assert admit(adm, "j1").allowed


# --- all or nothing --------------------------------------------------------------------------

def test_a_rate_refusal_takes_no_trial_and_no_lease(adm: Admitter, client: redis.Redis, clock: Clock) -> None:
    one = Limits(max_concurrency=5, rpm=1, burst=1, period=1)
    fragile = BreakerConfig(max_failures=1, open_wait=0.02)
    with clock.within(1.0):  # the next call comes inside the rate's 1 s
        assert admit(adm, "j0", limits=one, breaker=fragile).allowed
        settle(adm, "j0", "failure", limits=one, breaker=fragile)
        clock.sleep(0.03)
        refused = admit(adm, "j1", limits=one, breaker=fragile)
    assert (refused.allowed, refused.trial, refused.reason) == (False, False, "rpm")
    assert not client.exists(KEYS.breaker_trial(E), KEYS.leases(E))
    assert stats(adm)["state"] == "half_open" and not stats(adm)["trial_in_flight"]


def test_a_token_or_slot_refusal_takes_no_request_token(adm: Admitter, client: redis.Redis, clock: Clock) -> None:
    lim = Limits(max_concurrency=1, rpm=10, tpm=100, burst=2, period=10)  # token burst 20, 0.1 s a token
    with clock.within(0.1):  # the token burst is spent for 0.1 s
        assert admit(adm, "j0", limits=lim, tokens=20).allowed
        rpm_tat = client.get(KEYS.rate(E, "rpm"))
        slot = admit(adm, "j1", limits=lim, tokens=1)
        settle(adm, "j0", "success", limits=lim, reserved=20, used=20)
        token = admit(adm, "j1", limits=lim, tokens=1)
    assert (slot.reason, token.reason) == ("concurrency", "tpm")
    assert client.get(KEYS.rate(E, "rpm")) == rpm_tat
    assert adm.in_flight([E]) == {E: 0}


def test_refusals_report_the_first_cause_and_the_longest_wait(adm: Admitter, clock: Clock) -> None:
    rpm = Limits(rpm=1, burst=1, period=1)
    with clock.within(0.1):
        admit(adm, "j0", limits=rpm)
        adm.pause(E, 0.2)
        refused = admit(adm, "j1", limits=rpm)
    assert refused.reason == "paused" and 0.9 < refused.retry_after <= 1.0


# --- stats and keys --------------------------------------------------------------------------

def test_keys_left_behind_are_ours_and_expire(adm: Admitter, client: redis.Redis, clock: Clock) -> None:
    lim = Limits(max_concurrency=2, rpm=60, tpm=6000, period=10)  # 1/6 s a call, 1/600 s a token
    with clock.within(0.08):  # before the rate keys expire (the tpm one after 50 tokens: 1/12 s)
        ticket = admit(adm, "j1", limits=lim, tokens=100)
        admitted = {k.decode() for k in client.keys("*")}
        settle(adm, "j1", "success", limits=lim, reserved=100, used=50)
        settled = {k.decode() for k in client.keys("*")}
        ttls = [client.pttl(k) for k in client.keys("*")]
    assert ticket.allowed
    assert admitted == {KEYS.leases(E), KEYS.rate(E, "rpm"), KEYS.rate(E, "tpm"), KEYS.awaiting(E)}
    # the answer is the endpoint's progress (ttft); the call waits for nothing any more (no awaiting)
    assert settled == {KEYS.breaker(E), KEYS.rate(E, "rpm"), KEYS.rate(E, "tpm"), KEYS.ttft(E)}
    assert len(ttls) == 4 and all(ttl > 0 for ttl in ttls)
    clock.sleep(0.2)  # both rate keys expire once their theoretical arrival time has passed
    assert {k.decode() for k in client.keys("*")} == {KEYS.breaker(E), KEYS.ttft(E)}
    adm.reset(E)
    assert client.keys("*") == []


def test_stats_of_several_endpoints_in_one_call(adm: Admitter, clock: Clock) -> None:
    trip(adm, BreakerConfig(open_wait=10))
    admit(adm, "busy", endpoint="ep2")
    with clock.within(0.1):
        adm.pause("ep2", 1)
        every = adm.stats([E, "ep2", "never"])
    assert every[E]["state"] == "open" and every[E]["failures"] == 3
    assert (every["ep2"]["state"], every["ep2"]["in_flight"]) == ("closed", 1)
    assert 0.9 < every["ep2"]["paused_for"] <= 1
    assert every["never"] == {
        "state": "closed", "trips": 0, "calls": 0, "failures": 0, "success_rate": 1.0, "retry_in": 0.0,
        "open_wait": 0.0, "consecutive_failures": 0, "trial_in_flight": False, "in_flight": 0,
        "paused_for": 0.0, "suspect": False, "suspicions": 0, "failed_trials": 0,
        "ttft": {"samples": 0, "warm": False, "p50": None, "p95": None, "p99": None, "first_token_timeout": 60.0,
                 "suspect_after": 30.0, "hedge_after": None, "awaiting_first_token": 0, "longest_wait": 0.0,
                 "since_progress": None}}
    assert adm.stats([]) == {} and adm.in_flight([]) == {}


def test_reset_forgets_the_breaker(adm: Admitter) -> None:
    trip(adm)
    adm.reset(E)
    assert stats(adm)["state"] == "closed" and admit(adm, "j").allowed


# --- settings -> limits and breaker config (pure) --------------------------------------------

def endpoint(id_: str, model_name: str, model: str = "") -> Endpoint:
    return Endpoint(id=id_, chat_url="http://x/v1/chat/completions", model=model or model_name,
                    model_name=model_name, source="discovered")


def test_limits_layer_defaults_model_match_and_endpoint_id() -> None:
    settings = load_settings(
        agent_endpoint_max_concurrency=8, agent_endpoint_rpm=600, agent_rate_burst=3, agent_rate_period=30,
        agent_endpoint_limits='{"LLAMA": {"rpm": 60, "tpm": 1000}, "abc": {"max_concurrency": 2}}')
    assert limits_for(endpoint("z", "mistral-7b"), settings) == Limits(8, 600, 0, 3, 30.0)
    assert limits_for(endpoint("z", "x", "meta/Llama-3.1-8B"), settings) == Limits(8, 60, 1000, 3, 30.0)
    assert limits_for(endpoint("abc", "llama-3.1-70b"), settings) == Limits(2, 60, 1000, 3, 30.0)


@pytest.mark.parametrize("value", ["{not json", '["llama"]', '{"llama": {"rpm": -1}}',
                                   '{"llama": {"rps": 5}}', '{"": {"rpm": 5}}'])
def test_bad_endpoint_limits_stop_start_up(value: str) -> None:
    with pytest.raises(ConfigError, match="AGENT_ENDPOINT_LIMITS"):
        load_settings(agent_endpoint_limits=value)


def test_breaker_config_reads_the_settings() -> None:
    settings = load_settings(agent_max_failures=5, agent_breaker_open_wait=1, agent_breaker_open_wait_max=8,
                             agent_breaker_slow_call=30)
    assert breaker_config(settings) == BreakerConfig(max_failures=5, open_wait=1, open_wait_max=8, slow_call=30)
    with pytest.raises(ConfigError, match="AGENT_BREAKER_OPEN_WAIT_MAX"):
        load_settings(agent_breaker_open_wait=10, agent_breaker_open_wait_max=5)
