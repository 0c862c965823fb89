"""What settle.lua and admit.lua do for failover speed: the outcome "down", the soft "overdue"
refusal, suspicion from calls cut short lately, and a trial settled by its probe.

Run here on fakeredis with a frozen clock, and again on a real Redis by
tests/integration/real_redis/test_breaker_outcomes.py (`clock.within(s)`: steps that must land
within `s` seconds of Redis time for the assertions after them to hold).
"""

from __future__ import annotations

import pytest
import redis

from llmpool.admission import Admission, Admitter
from llmpool.errors import ConfigError
from llmpool.settings import load_settings
from llmpool.ttft import TtftConfig, ttft_config
from tests.conftest import Clock
from tests.unit.test_suspicion import BREAKER, FREE, KEYS, TTFT, E

# The suspicion tests' endpoint, breaker and TTFTs: usual TTFT 0.02 s (p99 one bucket up, < 0.025 s),
# so overdue after that, suspect after 0.3 s (the floor).
OVERDUE = 0.05  # past twice the p99, far within the suspicion's floor


@pytest.fixture
def adm(any_redis: redis.Redis) -> Admitter:
    return Admitter(any_redis, KEYS)


def admit(adm: Admitter, job: str, *, fallback: bool = False) -> Admission:
    return adm.admit(E, job, tokens=0, limits=FREE, breaker=BREAKER, lease=5.0, ttft=TTFT, fallback=fallback)


def settle(adm: Admitter, job: str, ticket: Admission, outcome: str) -> tuple[str, str]:
    done = adm.settle_call(E, job, outcome=outcome, trial=ticket.trial, reserved_tokens=0,  # type: ignore[arg-type]
                           used_tokens=None, duration=0.01, limits=FREE, breaker=BREAKER, ttft=TTFT)
    return done.state, done.transition


def warm(adm: Admitter, ttft: float = 0.02) -> None:
    for n in range(TTFT.min_samples):
        ticket = admit(adm, f"warm{n}")
        adm.first_token(E, f"warm{n}", ttft, ttft=TTFT)
        settle(adm, f"warm{n}", ticket, "success")


def stats(adm: Admitter) -> dict:
    return adm.stats([E], ttft=TTFT)[E]


# --- "down": a refused connection ----------------------------------------------------------------

def test_a_refused_connection_opens_a_closed_breaker_at_once(adm: Admitter) -> None:
    ticket = admit(adm, "j1")
    assert settle(adm, "j1", ticket, "down") == ("open", "opened")  # one call, not max_failures
    s = stats(adm)
    assert (s["state"], s["trips"], s["failures"], s["suspect"]) == ("open", 1, 1, False)
    assert admit(adm, "j2").reason == "open"


def test_a_failure_still_needs_max_failures(adm: Admitter) -> None:
    for n in range(BREAKER.max_failures - 1):
        assert settle(adm, f"j{n}", admit(adm, f"j{n}"), "failure") == ("closed", "")
    assert settle(adm, "last", admit(adm, "last"), "failure") == ("open", "opened")


def test_a_refused_trial_reopens_for_twice_as_long(adm: Admitter, clock: Clock) -> None:
    settle(adm, "j1", admit(adm, "j1"), "down")
    clock.sleep(BREAKER.open_wait)
    trial = admit(adm, "probe")
    assert trial.trial
    assert settle(adm, "probe", trial, "down") == ("open", "reopened")
    s = stats(adm)
    assert (s["open_wait"], s["failed_trials"], s["trips"]) == (2 * BREAKER.open_wait, 1, 2)


# --- "overdue": the soft refusal ----------------------------------------------------------------

def test_a_silent_warm_endpoint_is_overdue_for_a_caller_with_another_candidate(adm: Admitter, clock: Clock) -> None:
    warm(adm)
    assert admit(adm, "stuck").allowed
    clock.sleep(OVERDUE)
    with clock.within(TTFT.suspect_floor - OVERDUE):
        skipped = admit(adm, "next", fallback=True)
        last = admit(adm, "last")  # the job's last candidate: it ignores the soft refusal
        s = stats(adm)
    assert (skipped.allowed, skipped.trial, skipped.reason) == (False, False, "overdue")
    assert last.allowed
    # soft: no breaker change, no suspicion, no trial
    assert (s["state"], s["trips"], s["suspicions"], s["trial_in_flight"]) == ("closed", 0, 0, False)
    adm.first_token(E, "stuck", OVERDUE + 0.01, ttft=TTFT)  # it answers after all: the next token ends it
    assert admit(adm, "after", fallback=True).allowed


def test_a_wait_within_the_usual_ttft_is_not_overdue(adm: Admitter, clock: Clock) -> None:
    warm(adm, 0.2)  # p99 0.2..0.25 s (0.222, the bucket's bound): overdue after that, suspect after 3 x
    with clock.within(0.22):
        assert admit(adm, "slower").allowed
        clock.sleep(0.21)  # slower than usual (0.2 s), within its p99
        assert admit(adm, "next", fallback=True).allowed
    clock.sleep(0.1)
    assert admit(adm, "later", fallback=True).reason == "overdue"


def test_an_overdue_factor_of_0_turns_it_off_and_one_below_1_is_refused(adm: Admitter, clock: Clock) -> None:
    assert ttft_config(load_settings(agent_overdue_factor=0)).overdue_factor == 0
    with pytest.raises(ConfigError, match="AGENT_OVERDUE_FACTOR"):
        load_settings(agent_overdue_factor=0.5)
    warm(adm)
    assert admit(adm, "stuck").allowed
    clock.sleep(OVERDUE)
    off = TtftConfig(**{**vars(TTFT), "overdue_factor": 0.0})
    with clock.within(TTFT.suspect_floor - OVERDUE):
        assert adm.admit(E, "next", tokens=0, limits=FREE, breaker=BREAKER, lease=5.0, ttft=off, fallback=True).allowed
        assert admit(adm, "other", fallback=True).reason == "overdue"  # the same silence, the factor on


def test_a_cold_endpoint_is_never_overdue(adm: Admitter, clock: Clock) -> None:
    assert admit(adm, "stuck").allowed
    clock.sleep(0.5)  # far past any usual TTFT, within the cold suspicion's max
    assert admit(adm, "next", fallback=True).allowed


def test_an_endpoint_serving_new_calls_is_not_overdue(adm: Admitter, clock: Clock) -> None:
    warm(adm)
    assert admit(adm, "slow").allowed
    clock.sleep(OVERDUE)
    with clock.within(0.02):  # inside the p99 of the other's first token
        assert admit(adm, "other").allowed
        adm.first_token(E, "other", 0.01, ttft=TTFT)  # it still serves new calls: busy, not silent
        assert admit(adm, "next", fallback=True).allowed


def test_old_streams_ending_do_not_hide_a_silence(adm: Admitter, clock: Clock) -> None:
    """A server that stopped taking new calls may still finish the streams it had started."""
    warm(adm)
    streaming = admit(adm, "streaming")
    adm.first_token(E, "streaming", 0.02, ttft=TTFT)
    assert admit(adm, "stuck").allowed
    clock.sleep(OVERDUE)
    settle(adm, "streaming", streaming, "success")  # progress for suspicion, no new call served
    assert admit(adm, "next", fallback=True).reason == "overdue"


def test_calls_cut_short_lately_keep_it_overdue_and_add_up_to_a_suspicion(adm: Admitter, clock: Clock) -> None:
    """A hedge answered for each call to the silent endpoint: none waits now, yet it is silent."""
    warm(adm)
    cut = admit(adm, "cut")
    clock.sleep(0.2)
    settle(adm, "cut", cut, "neutral")  # cancelled with no token: its hedge answered first
    with clock.within(TTFT.suspect_floor):  # the cut stays recent: within 0.3 s of it
        assert admit(adm, "skips", fallback=True).reason == "overdue"
        clock.sleep(0.11)  # 0.31 s of silence since the cut call was sent, no call waiting now
        assert admit(adm, "next").reason == "suspect"
    assert stats(adm)["suspicions"] == 1


def test_an_old_cut_proves_nothing(adm: Admitter, clock: Clock) -> None:
    warm(adm)
    cut = admit(adm, "cut")
    clock.sleep(0.2)
    settle(adm, "cut", cut, "neutral")
    clock.sleep(TTFT.suspect_floor + 0.01)  # idle since: nobody asked it anything
    with clock.within(OVERDUE):
        assert admit(adm, "new", fallback=True).allowed
        assert stats(adm)["suspicions"] == 0
