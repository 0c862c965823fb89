"""One module owns each Redis key pattern: only it names the key (keys.py builds every one)."""

from __future__ import annotations

import re
from pathlib import Path

from llmpool.keys import Keys

ROOT = Path(__file__).resolve().parents[2]
PRODUCTION = ("llmpool", "workers", "beat", "api")

OWNERS = {
    "job": {"llmpool/jobs.py"},
    "job_stream": {"llmpool/jobs.py"},
    "job_history": {"llmpool/jobs.py"},
    "jobs_running": {"llmpool/jobs.py"},
    "jobs_parked": {"llmpool/jobs.py"},
    "jobs_unpublished": {"llmpool/jobs.py"},
    "memory_room": {"llmpool/jobs.py"},
    "conversation": {"llmpool/conversations.py"},
    "workers": {"llmpool/heartbeats.py"},
    "worker_stats": {"llmpool/heartbeats.py"},
    "endpoints": {"llmpool/registry.py"},
    "health": {"llmpool/registry.py"},
    "pin": {"llmpool/registry.py"},
    "selection": {"llmpool/registry.py"},
    "discovery_state": {"llmpool/registry.py"},
    "lock": {"llmpool/locks.py"},
    "discovery_cache": {"llmpool/discovery/backend.py"},
    "breaker": {"llmpool/admission.py"},
    "breaker_trial": {"llmpool/admission.py"},
    # server_load.py only counts live leases, beside the server's figure, for routing (member_load.lua)
    "leases": {"llmpool/admission.py", "llmpool/server_load.py"},
    "rate": {"llmpool/admission.py"},
    "pause": {"llmpool/admission.py"},
    "awaiting": {"llmpool/admission.py"},
    "ttft": {"llmpool/admission.py"},
    "server_load": {"llmpool/server_load.py"},
    "api_wake": {"api/stream_hub.py"},
    "metric": {"llmpool/metrics/store.py"},
    # Celery's own lists, read for queue depths
    "celery_queue": {"api/routes/status.py", "llmpool/metrics/collector.py"},
}


def _users() -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for package in PRODUCTION:
        for path in (ROOT / package).rglob("*.py"):
            rel = path.relative_to(ROOT).as_posix()
            if rel == "llmpool/keys.py" or rel.startswith("llmpool/dev/"):
                continue
            for name in re.findall(r"\bkeys\.(\w+)\(", path.read_text()):
                found.setdefault(name, set()).add(rel)
    return found


def test_every_key_builder_has_an_owner() -> None:
    builders = {name for name in vars(Keys) if not name.startswith("_") and callable(getattr(Keys, name))}
    assert builders - {"pattern"} == set(OWNERS)


def test_only_the_owner_names_a_key() -> None:
    strays = {name: users - OWNERS.get(name, set()) for name, users in _users().items()}
    assert {name: users for name, users in strays.items() if users} == {}


def test_no_key_string_outside_keys_py() -> None:
    """A literal like "llmpool:job:" anywhere but keys.py would bypass the prefix setting."""
    literal = re.compile(r"""["']llmpool:[\w{]""")
    offenders = [p.relative_to(ROOT).as_posix() for package in PRODUCTION for p in (ROOT / package).rglob("*.py")
                 if p.name != "keys.py" and literal.search(p.read_text())]
    assert offenders == []
