"""Redis Sentinel failover under load: the primary is SIGKILLed while jobs are submitted through the
public Client; the Sentinels promote the replica; jobs keep being answered afterwards.

Real processes: a primary (AOF on), a replica, three Sentinels (quorum 2, down after 1 s), a Celery
worker and the mock LLM, all on REDIS_URL=sentinel://...;sentinel://...;sentinel://... . Every
submit is counted and each ends in one of: answered, failed with a named error, refused at submit
with a named error (nothing stored), or lost to asynchronous replication (accepted by the old
primary in its last moments, never copied to the replica). None may be left unfinished.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis

from llmpool.dev.mock_llm import ContainerSpec, MockLLM
from llmpool.dev.redis_server import free_port
from llmpool.errors import JobFailed, LLMPoolError, error_from_dict
from llmpool.jobs import FINAL_STATES, decode_event
from llmpool.scripts import lua_source
from tests.chaos.harness import FAST_RECOVERY, Chaos
from tests.conftest import require_redis_binary
from tests.processes import clean_env
from tests.sentinel import MASTER_NAME, SentinelCluster

LLM_SECONDS = 0.5
SUBMIT_EVERY = 0.1  # 10 submits a second: below the worker's 16 a second, so no backlog builds
BEFORE_KILL = 3.0
AFTER_PROMOTION = 6.0
# A write the old primary acknowledged can miss the replica only if it came in its last moments
# (loopback replication lags by microseconds; a SIGKILL drops what sat in the primary's buffers).
REPLICATION_TAIL = 1.0
# After the promotion, a pooled connection to the dead primary fails once and is replaced.
RECONNECT_SLACK = 3.0


@dataclass
class Attempt:
    job_id: str
    started: float
    ended: float = 0.0
    error: str | None = None  # the class of what submit raised; None: accepted


@dataclass
class Submitter:
    """Submits one job every SUBMIT_EVERY seconds through the public Client until stopped."""

    chaos: Chaos
    attempts: list[Attempt] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self.stop.is_set():
            attempt = Attempt(job_id=f"ha-{len(self.attempts)}", started=time.monotonic())
            try:
                self.chaos.client.submit(f"ha {len(self.attempts)}", job_id=attempt.job_id, stream=True)
            except (LLMPoolError, redis.RedisError) as exc:  # a named refusal, never anything else
                attempt.error = type(exc).__name__
            attempt.ended = time.monotonic()
            self.attempts.append(attempt)
            self.stop.wait(SUBMIT_EVERY)


@dataclass
class Outcome:
    answered: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # job id -> error type its record states
    refused: dict[str, str] = field(default_factory=dict)  # job id -> what submit raised; nothing stored
    lost: list[Attempt] = field(default_factory=list)  # accepted, then absent from the new primary
    unfinished: list[str] = field(default_factory=list)
    double_ends: list[str] = field(default_factory=list)
    ran_after_refusal: list[str] = field(default_factory=list)  # submit raised, but its record lived on

    def summary(self) -> str:
        return (f"answered={len(self.answered)} failed={dict(Counter(self.failed.values()))} "
                f"refused={dict(Counter(self.refused.values()))} lost={len(self.lost)} "
                f"unfinished={len(self.unfinished)} double_ends={len(self.double_ends)} "
                f"ran_after_refusal={len(self.ran_after_refusal)}")


def account(chaos: Chaos, attempts: list[Attempt]) -> Outcome:
    """Where every attempted submit ended, read from the (new) primary."""
    out = Outcome()
    for attempt in attempts:
        record = chaos.store.get(attempt.job_id)
        if record is None:
            if attempt.error is None:
                out.lost.append(attempt)
            else:
                out.refused[attempt.job_id] = attempt.error
            continue
        if attempt.error is not None:
            out.ran_after_refusal.append(attempt.job_id)
        ends = [e for _i, f in chaos.redis.xrange(chaos.store.stream_key(attempt.job_id))
                if (e := decode_event(f)).get("type") == "end"]
        if len(ends) > 1:
            out.double_ends.append(attempt.job_id)
        state = record.get("state")
        if state == "succeeded":
            out.answered.append(attempt.job_id)
        elif state in FINAL_STATES:
            out.failed[attempt.job_id] = str((record.get("error") or {}).get("type"))
        else:
            out.unfinished.append(attempt.job_id)
    return out


@contextmanager
def sentinel_chaos(tmp: Path) -> Iterator[tuple[SentinelCluster, Chaos]]:
    require_redis_binary()
    spec = ContainerSpec(name="llm", ttft=LLM_SECONDS, tokens_per_second=0)
    with SentinelCluster(tmp) as cluster, MockLLM(containers=[spec]) as mock:
        env = clean_env(
            redis_url=cluster.url, agent_redis_master_name=MASTER_NAME,
            local_llm_host="127.0.0.1", local_llm_port=mock.port("llm"),
            agent_backend_url=f"http://127.0.0.1:{free_port()}", agent_health_check_interval=3600,
            agent_connect_timeout=2, agent_first_token_timeout=30, agent_request_timeout=60, **FAST_RECOVERY,
        )
        rig = Chaos(tmp=tmp, server=cluster.primary, mock=mock, env=env, redis_url=cluster.url)
        try:
            yield cluster, rig
        finally:
            rig.close()


def script_on(port: int, name: str) -> bool:
    """Whether the Redis at `port` has llmpool's `name`.lua in its script cache."""
    client = redis.Redis(port=port, socket_timeout=2)
    try:
        sha = hashlib.sha1(lua_source(name).encode()).hexdigest()
        return bool(client.script_exists(sha)[0])
    finally:
        client.close()


def claim_script_on(port: int) -> bool:
    """Whether a worker's claim ran there: job_start.lua (claim and first admission in one trip), or
    job_claim.lua (the claim alone, when the worker had no candidate planned)."""
    return script_on(port, "job_start") or script_on(port, "job_claim")


@pytest.mark.timeout(150)
def test_jobs_keep_being_answered_across_a_sentinel_failover(tmp_path: Path) -> None:
    with sentinel_chaos(tmp_path) as (cluster, chaos):
        worker = chaos.worker("w1", concurrency=8)
        submitter = Submitter(chaos)
        thread = threading.Thread(target=submitter.run, daemon=True)
        thread.start()
        try:
            time.sleep(BEFORE_KILL)
            # The replica's script cache is its own: Redis 7 copies a script's writes, not the script.
            replica_had_claim = claim_script_on(cluster.replica.port)
            killed = cluster.kill_primary()
            try:
                cluster.wait_promoted(timeout=30)
            except TimeoutError as exc:
                raise TimeoutError(f"{exc}\n{cluster.log_tail()}") from None
            promoted = time.monotonic()
            time.sleep(AFTER_PROMOTION)
        finally:
            submitter.stop.set()
            thread.join(10)
        attempts = list(submitter.attempts)
        accepted = [a.job_id for a in attempts if a.error is None or chaos.store.get(a.job_id) is not None]
        chaos.submitted = accepted
        chaos.wait_finished(timeout=90)
        out = account(chaos, attempts)
        recovered = len(chaos.ledger().recovered())  # running at the kill: their leases lapsed, the sweep re-ran them
        after = [a for a in attempts if a.started > promoted + RECONNECT_SLACK]
        print(f"\n[chaos] Sentinel failover: {len(attempts)} submits, {out.summary()} recovered={recovered}; "
              f"replica promoted "
              f"{promoted - killed:.1f}s after the SIGKILL; refusals from "
              f"{min((a.started - killed for a in attempts if a.error), default=0):.1f}s to "
              f"{max((a.ended - killed for a in attempts if a.error), default=0):.1f}s after it; "
              f"{len(after)} submitted after the reconnect, all answered; "
              f"claim script reloaded on the new primary: {not replica_had_claim}")

        assert worker.alive(), worker.log_tail()
        assert (out.unfinished, out.double_ends) == ([], []), out.summary()
        # A failure states a reason this version names (JobFailed is the class for unknown ones).
        assert all(type(error_from_dict({"type": t})) is not JobFailed for t in out.failed.values()), out.summary()
        # Refusals come while there is no primary, not after: every one began before the reconnect.
        assert all(a.started <= promoted + RECONNECT_SLACK for a in attempts if a.error), out.summary()
        # The Client names the outage in its own terms, never a raw redis-py error.
        assert set(out.refused.values()) <= {"RedisUnavailable", "SubmitFailed"}, out.summary()
        # The only jobs lost are ones the old primary accepted just before it died.
        assert all(killed - REPLICATION_TAIL <= a.ended <= killed for a in out.lost), out.summary()
        # Jobs keep being answered: every one submitted after the reconnect, on the new primary.
        assert len(after) >= 15 and all(a.job_id in out.answered for a in after), out.summary()
        # Our Lua scripts run on the new primary (EVALSHA's NOSCRIPT there loads them again).
        assert claim_script_on(cluster.replica.port)
