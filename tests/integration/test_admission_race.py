"""Admission raced by real OS processes on one real Redis: one trial, rate held, cap never exceeded.

Each test starts 4 spawned processes (no state shared but Redis) and lines them up on a barrier so
their calls land together. Times are measured by the processes' clocks, which on one machine are
the clock Redis reads too.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import random
import signal
import time
from collections.abc import Callable
from typing import Any

import redis

from llmpool.admission import Admitter, Limits
from llmpool.breaker import BreakerConfig
from llmpool.keys import Keys

KEYS = Keys("race")
E = "ep"
PROCS = 4
CTX = mp.get_context("spawn")
FRAGILE = BreakerConfig(max_failures=1, open_wait=0.01, trial_lease=30)
HOLDING = "race-test:holding"  # the test's own counter of calls in progress, not an llmpool key


def _admitter(url: str) -> Admitter:
    return Admitter(redis.Redis.from_url(url), KEYS)


def _run(target: Callable[..., None], *args: Any, timeout: float = 60) -> list[Any]:
    """Run `target(url, barrier, results, *args)` in PROCS processes; what each put on `results`."""
    results = CTX.Queue()
    procs = [CTX.Process(target=target, args=(*args, results)) for _ in range(PROCS)]
    for proc in procs:
        proc.start()
    try:
        out = [results.get(timeout=timeout) for _ in procs]
    finally:
        for proc in procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()
    assert all(proc.exitcode == 0 for proc in procs), [proc.exitcode for proc in procs]
    return out


# --- one trial, fleet-wide --------------------------------------------------------------------

def _trial_racer(url: str, barrier: Any, rounds: int, results: Any) -> None:
    adm = _admitter(url)
    seen = []
    for n in range(rounds):
        barrier.wait()  # the parent has made the breaker half-open
        ticket = adm.admit(E, f"{os.getpid()}-{n}", tokens=0, limits=Limits(), breaker=FRAGILE, lease=5)
        seen.append((ticket.allowed, ticket.trial, ticket.reason))
        barrier.wait()  # everyone has asked before the parent resets
    results.put(seen)


def _half_open(adm: Admitter) -> None:
    adm.reset(E)
    assert adm.admit(E, "tripper", tokens=0, limits=Limits(), breaker=FRAGILE, lease=5).allowed
    adm.settle(E, "tripper", outcome="failure", trial=False, reserved_tokens=0, used_tokens=None,
               duration=0.1, limits=Limits(), breaker=FRAGILE)
    time.sleep(FRAGILE.open_wait + 0.01)
    assert adm.stats([E])[E]["state"] == "half_open"


def test_four_processes_racing_a_half_open_breaker_get_one_trial(redis_url: str) -> None:
    rounds = 20
    barrier = CTX.Barrier(PROCS + 1, timeout=30)
    adm = _admitter(redis_url)
    results = CTX.Queue()
    procs = [CTX.Process(target=_trial_racer, args=(redis_url, barrier, rounds, results)) for _ in range(PROCS)]
    for proc in procs:
        proc.start()
    for _ in range(rounds):
        _half_open(adm)
        barrier.wait()
        barrier.wait()
    per_process = [results.get(timeout=30) for _ in procs]
    for proc in procs:
        proc.join(timeout=10)
    for n in range(rounds):
        outcomes = sorted(seen[n] for seen in per_process)
        assert outcomes == [(False, False, "trial_busy")] * 3 + [(True, True, "ok")], (n, outcomes)


# --- a rate limit shared by 4 processes ---------------------------------------------------------

RATE = Limits(rpm=20, burst=2, period=2.0)
RUN = 6.0


def _hammer(url: str, barrier: Any, results: Any) -> None:
    adm = _admitter(url)
    admitted: list[tuple[float, float]] = []
    barrier.wait()
    end, n = time.time() + RUN, 0
    while time.time() < end:
        n += 1
        sent = time.time()
        ticket = adm.admit(E, f"{os.getpid()}-{n}", tokens=0, limits=RATE, breaker=FRAGILE, lease=5)
        if ticket.allowed:
            admitted.append((sent, time.time()))  # Redis decided in between
        else:
            time.sleep(min(ticket.retry_after, 0.002))  # hammer, but leave Redis some CPU
    results.put(admitted)


def busiest_window(admitted: list[tuple[float, float]], period: float) -> int:
    """The most admissions Redis surely decided inside one window of `period`.

    A process can be descheduled between Redis' answer and reading its own clock, so an
    admission's time is only known to lie between sending the call and reading the answer; it
    counts for a window only when that whole span lies inside it (a lower bound of the truth).
    """
    return max(sum(1 for sent, answered in admitted if start <= sent and answered <= start + period)
               for start, _ in admitted)


def test_a_rate_limit_holds_across_four_processes(redis_url: str) -> None:
    barrier = CTX.Barrier(PROCS, timeout=30)
    admitted = sorted(span for spans in _run(_hammer, redis_url, barrier) for span in spans)
    # Any window of one period: at most limit + burst.
    busiest = busiest_window(admitted, RATE.period)
    assert busiest <= RATE.rpm + RATE.burst, busiest
    expected = RATE.rpm * RUN / RATE.period + RATE.burst
    assert abs(len(admitted) - expected) <= 0.05 * expected, (len(admitted), expected)


# --- a concurrency cap shared by 4 processes ----------------------------------------------------

CAP = Limits(max_concurrency=3, period=1.0)


def _holder(url: str, barrier: Any, results: Any) -> None:
    adm = _admitter(url)
    barrier.wait()
    end, n, peak, held = time.time() + 2.0, 0, 0, 0
    while time.time() < end:
        n += 1
        job = f"{os.getpid()}-{n}"
        ticket = adm.admit(E, job, tokens=0, limits=CAP, breaker=FRAGILE, lease=5)
        if not ticket.allowed:
            time.sleep(min(ticket.retry_after, 0.002))
            continue
        peak, held = max(peak, adm.redis.incr(HOLDING)), held + 1  # type: ignore[arg-type]
        time.sleep(random.uniform(0.005, 0.02))
        adm.redis.decr(HOLDING)
        adm.settle(E, job, outcome="success", trial=False, reserved_tokens=0, used_tokens=None, duration=0.01,
                   limits=CAP, breaker=FRAGILE)
    results.put((peak, held))


def test_a_concurrency_cap_is_never_exceeded(redis_url: str) -> None:
    barrier = CTX.Barrier(PROCS, timeout=30)
    out = _run(_holder, redis_url, barrier)
    peak = max(p for p, _ in out)
    assert peak == CAP.max_concurrency, out  # reached, never passed
    assert sum(h for _, h in out) > 50
    assert _admitter(redis_url).in_flight([E]) == {E: 0}


# Long enough that the kill, the reaping and the next admit fit inside it on a loaded machine.
DOOMED_LEASE = 1.0


def _grab_and_hang(url: str, count: int, ready: Any) -> None:
    adm = _admitter(url)
    for n in range(count):
        assert adm.admit(E, f"doomed-{n}", tokens=0, limits=CAP, breaker=FRAGILE, lease=DOOMED_LEASE).allowed
    ready.set()
    time.sleep(60)


def test_a_killed_process_leases_come_back(redis_url: str) -> None:
    ready = CTX.Event()
    proc = CTX.Process(target=_grab_and_hang, args=(redis_url, CAP.max_concurrency, ready))
    proc.start()
    assert ready.wait(timeout=30)
    os.kill(proc.pid, signal.SIGKILL)  # type: ignore[arg-type]
    proc.join(timeout=10)
    adm = _admitter(redis_url)
    refused = adm.admit(E, "survivor", tokens=0, limits=CAP, breaker=FRAGILE, lease=5)
    assert refused.reason == "concurrency" and 0 < refused.retry_after <= DOOMED_LEASE
    time.sleep(refused.retry_after + 0.01)
    assert adm.admit(E, "survivor", tokens=0, limits=CAP, breaker=FRAGILE, lease=5).allowed
