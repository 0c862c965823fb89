"""Health transitions: every state x probe outcome, the degraded threshold, the hysteresis."""

from __future__ import annotations

import json

import pytest

from llmpool.errors import ConfigError
from llmpool.health import (
    SELECTABLE,
    Health,
    HealthState,
    ProbeResult,
    assumed_healthy,
    next_health,
    probe_state,
)
from llmpool.settings import Settings, load_settings

NOW = 100.0
EARLIER = 50.0


def h(state: HealthState, failures: int = 0, successes: int = 0, *, since: float | None = EARLIER,
      error: str | None = None) -> Health:
    return Health(state=state, consecutive_failures=failures, consecutive_successes=successes,
                  last_check=EARLIER - 30, latency=0.1, last_error=error, since=since)


def ok(latency: float = 0.1) -> ProbeResult:
    return ProbeResult(ok=True, latency=latency, status=200, url="http://x/health")


def fail(error: str | None = "connect error: refused", status: int | None = None) -> ProbeResult:
    return ProbeResult(ok=False, latency=0.3, status=status, error=error, url="http://x/health")


NEW = Health()  # never probed: unknown, no since

# (id, prev, probe, settings overrides, expected (state, failures, successes, since, last_error))
CASES = [
    # unknown: one success is enough, failures count up to max_failures
    ("unknown+ok", NEW, ok(), {}, ("healthy", 0, 1, NOW, None)),
    ("unknown+slow", NEW, ok(2.5), {}, ("degraded", 0, 1, NOW, None)),
    ("unknown+fail", NEW, fail(), {}, ("unknown", 1, 0, None, "connect error: refused")),
    ("unknown 2 fails+fail", h("unknown", 2, since=None), fail(), {},
     ("unhealthy", 3, 0, NOW, "connect error: refused")),
    ("unknown 2 fails+ok", h("unknown", 2, since=None, error="e"), ok(), {},
     ("healthy", 0, 1, NOW, None)),
    # healthy/degraded: latency picks between them at every success
    ("healthy+ok", h("healthy", 0, 5), ok(), {}, ("healthy", 0, 6, EARLIER, None)),
    ("healthy+slow", h("healthy", 0, 5), ok(3.0), {}, ("degraded", 0, 6, NOW, None)),
    ("degraded+fast", h("degraded", 0, 5), ok(0.2), {}, ("healthy", 0, 6, NOW, None)),
    ("degraded+slow", h("degraded", 0, 5), ok(2.0), {}, ("degraded", 0, 6, EARLIER, None)),
    # healthy/degraded: failures keep the state until max_failures
    ("healthy+fail", h("healthy", 0, 5), fail(), {},
     ("healthy", 1, 0, EARLIER, "connect error: refused")),
    ("healthy 1 fail+fail", h("healthy", 1, error="a"), fail("b"), {}, ("healthy", 2, 0, EARLIER, "b")),
    ("healthy 2 fails+fail", h("healthy", 2, error="a"), fail("b"), {}, ("unhealthy", 3, 0, NOW, "b")),
    ("degraded 2 fails+fail", h("degraded", 2), fail("b"), {}, ("unhealthy", 3, 0, NOW, "b")),
    ("healthy 2 fails+ok: blip stays visible", h("healthy", 2, error="a"), ok(), {},
     ("healthy", 0, 1, EARLIER, "a")),
    ("status without error text", h("healthy"), fail(None, 503), {},
     ("healthy", 1, 0, EARLIER, "HTTP 503")),
    # unhealthy: recovery_successes (2) in a row to come back; a failure restarts the count
    ("unhealthy+ok", h("unhealthy", 4, error="a"), ok(), {}, ("unhealthy", 0, 1, EARLIER, "a")),
    ("unhealthy 1 ok+ok", h("unhealthy", 0, 1, error="a"), ok(), {}, ("healthy", 0, 2, NOW, None)),
    ("unhealthy 1 ok+slow", h("unhealthy", 0, 1, error="a"), ok(2.5), {},
     ("degraded", 0, 2, NOW, None)),
    ("unhealthy 1 ok+fail", h("unhealthy", 0, 1, error="a"), fail("b"), {},
     ("unhealthy", 1, 0, EARLIER, "b")),
    ("unhealthy+fail", h("unhealthy", 3, error="a"), fail("b"), {}, ("unhealthy", 4, 0, EARLIER, "b")),
    # knobs
    ("max_failures=1 healthy", h("healthy", 0, 9), fail(), {"max_failures": 1},
     ("unhealthy", 1, 0, NOW, "connect error: refused")),
    ("max_failures=1 unknown", NEW, fail(), {"max_failures": 1},
     ("unhealthy", 1, 0, NOW, "connect error: refused")),
    ("recovery=1", h("unhealthy", 7, error="a"), ok(), {"recovery_successes": 1},
     ("healthy", 0, 1, NOW, None)),
    ("recovery=3 second ok", h("unhealthy", 0, 1, error="a"), ok(), {"recovery_successes": 3},
     ("unhealthy", 0, 2, EARLIER, "a")),
    ("recovery=3 third ok", h("unhealthy", 0, 2, error="a"), ok(), {"recovery_successes": 3},
     ("healthy", 0, 3, NOW, None)),
    ("degraded_after=0.5", NEW, ok(0.6), {"degraded_after": 0.5}, ("degraded", 0, 1, NOW, None)),
    ("degraded_after=0.5 fast", NEW, ok(0.4), {"degraded_after": 0.5}, ("healthy", 0, 1, NOW, None)),
]


@pytest.mark.parametrize(("prev", "probe", "knobs", "expected"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_transition(prev: Health, probe: ProbeResult, knobs: dict[str, float],
                    expected: tuple[str, int, int, float | None, str | None]) -> None:
    options = {"max_failures": 3, "recovery_successes": 2, **knobs}
    after = next_health(prev, probe, now=NOW, **options)  # type: ignore[arg-type]
    state, failures, successes, since, error = expected
    assert (after.state, after.consecutive_failures, after.consecutive_successes) == (
        state, failures, successes)
    assert (after.since, after.last_error) == (since, error)
    assert (after.last_check, after.latency) == (NOW, probe.latency)


@pytest.mark.parametrize(("latency", "state"), [(0.0, "healthy"), (1.999, "healthy"),
                                                (2.0, "degraded"), (30.0, "degraded")])
def test_tt_studio_threshold_is_two_seconds(latency: float, state: str) -> None:
    assert probe_state(ok(latency)) == state
    assert probe_state(fail()) == "unhealthy"


def test_a_flapping_endpoint_over_time() -> None:
    """Failures below the limit keep it usable; it comes back only after two good probes."""
    health, seen = Health(), []
    script = [ok(), fail(), fail(), ok(), fail(), fail(), fail(), ok(), fail(), ok(), ok(3), ok()]
    for t, probe in enumerate(script):
        health = next_health(health, probe, now=float(t), max_failures=3, recovery_successes=2)
        seen.append((health.state[0], health.since))
    assert seen == [
        ("h", 0.0), ("h", 0.0), ("h", 0.0), ("h", 0.0), ("h", 0.0), ("h", 0.0),
        ("u", 6.0), ("u", 6.0), ("u", 6.0), ("u", 6.0), ("d", 10.0), ("h", 11.0),
    ]


def test_selectable_states() -> None:
    assert SELECTABLE == ("healthy", "degraded")
    assert [h(s).selectable for s in ("unknown", "healthy", "degraded", "unhealthy")] == [
        False, True, True, False]


def test_assumed_healthy() -> None:
    health = assumed_healthy(NOW)
    assert (health.state, health.since, health.last_check, health.selectable) == (
        "healthy", NOW, NOW, True)


def test_dict_round_trip_through_json() -> None:
    health = h("unhealthy", 3, error="HTTP 500")
    assert Health.from_dict(json.loads(json.dumps(health.to_dict()))) == health


def test_from_dict_is_tolerant() -> None:
    assert Health.from_dict({}) == Health()
    assert Health.from_dict({"state": "healthy", "added_later": 1}) == Health(state="healthy")
    assert Health.from_dict({"state": "bogus"}).state == "unknown"
    text = {"state": "degraded", "consecutive_failures": "2", "latency": "0.5", "since": "oops"}
    assert Health.from_dict(text) == Health(state="degraded", consecutive_failures=2, latency=0.5)


def test_recovery_setting() -> None:
    assert Settings.model_fields["agent_health_recovery_successes"].default == 2
    assert load_settings(agent_health_recovery_successes=5).agent_health_recovery_successes == 5
    with pytest.raises(ConfigError, match="AGENT_HEALTH_RECOVERY_SUCCESSES"):
        load_settings(agent_health_recovery_successes=0)
