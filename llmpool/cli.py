"""The `llmpool` command: `status`, `check-config`, `jobs`; `up` and `mock-llm` come from llmpool.dev."""

from __future__ import annotations

import argparse
import sys
from importlib.metadata import entry_points

from llmpool.errors import ConfigError

__all__ = ["main"]

# Subcommands that live outside the core (`up`, `mock-llm` in llmpool.dev) register here, so
# the production CLI never imports the dev package.
COMMANDS_GROUP = "llmpool.commands"


def _cmd_check_config(args: argparse.Namespace) -> int:
    from llmpool.settings import issues_report, load_settings

    settings = load_settings()
    report = issues_report(settings)
    print(report or "Configuration OK")
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    import json
    import time

    import redis

    from llmpool.admission import Admitter
    from llmpool.gate_figures import read_gate_figures, share_base
    from llmpool.heartbeats import ALIVE_FOR, WorkerHeartbeats, by_host
    from llmpool.hosts_view import render_hosts
    from llmpool.keys import Keys
    from llmpool.redis_conn import redacted_url, redis_client
    from llmpool.registry import Registry
    from llmpool.settings import load_settings
    from llmpool.status_view import effective_current, endpoint_rows, render_table

    settings = load_settings()
    client = redis_client(settings, socket_connect_timeout=3, socket_timeout=5)
    keys = Keys(settings.agent_redis_prefix)
    try:
        snap = Registry(client, keys).snapshot()
        heartbeats = WorkerHeartbeats(client, keys)
        pipe = client.pipeline(transaction=False)
        heartbeats.alive_names(pipe, since=time.time() - ALIVE_FOR)
        workers = heartbeats.figures(pipe.execute()[0])
        hosts = by_host(workers)
        selected = len(snap.selection.order) if snap.selection else 0
        breakers = read_gate_figures(Admitter(client, keys), settings, [r.endpoint for r in snap.records.values()],
                                     fleet_slots=share_base(selected, workers))
    except redis.RedisError as exc:
        print(f"llmpool: cannot read the registry at {redacted_url(settings.redis_url)}: {exc}", file=sys.stderr)
        return 1
    finally:
        client.close()
    rows = endpoint_rows(snap, checks_enabled=settings.agent_health_check_enabled, breakers=breakers)
    if args.workers:
        print(json.dumps(hosts, indent=2) if args.json else render_hosts(hosts))
        return 0
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    current = effective_current(snap.selection, breakers)
    waiting = "selected: none (waiting for an LLM)"
    print(f"selected: {current.id} ({current.model_name})" if current else waiting)
    if snap.pin:
        print(f"pinned:   {snap.pin}")
    print(render_table(rows) if rows else "no endpoints registered yet")
    print(f"\nworkers heard from in the last {ALIVE_FOR:.0f} s:\n{render_hosts(hosts)}")
    return 0


def _cmd_jobs_show(args: argparse.Namespace) -> int:
    import json

    import redis

    from llmpool.jobs import JobStore
    from llmpool.keys import Keys
    from llmpool.redis_conn import redacted_url, redis_client
    from llmpool.settings import load_settings

    settings = load_settings()
    client = redis_client(settings, socket_connect_timeout=3, socket_timeout=5)
    store = JobStore(client, Keys(settings.agent_redis_prefix), ttl=settings.agent_result_ttl,
                     stream_ttl=settings.agent_stream_ttl)
    try:
        record = store.get(args.job_id)
    except redis.RedisError as exc:
        print(f"llmpool: cannot read jobs at {redacted_url(settings.redis_url)}: {exc}", file=sys.stderr)
        return 1
    finally:
        client.close()
    if record is None:
        print(f"llmpool: no job with id {args.job_id}", file=sys.stderr)
        return 1
    print(json.dumps({"job_id": args.job_id, **record}, indent=2, default=str))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llmpool", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    status = sub.add_parser("status", help="the endpoint registry and selection, and live workers per host")
    status.add_argument("--json", action="store_true", help="print the rows as JSON")
    status.add_argument("--workers", action="store_true",
                        help="only the live workers per host, with their host's figures")
    status.set_defaults(func=_cmd_status)
    check = sub.add_parser("check-config", help="validate settings and print the issues report")
    check.set_defaults(func=_cmd_check_config)
    jobs = sub.add_parser("jobs", help="read job records").add_subparsers(dest="jobs_command", required=True)
    show = jobs.add_parser("show", help="one job's record: state, attempts, history, result or error")
    show.add_argument("job_id")
    show.set_defaults(func=_cmd_jobs_show)
    for command in sorted(entry_points(group=COMMANDS_GROUP), key=lambda c: c.name):
        add_arguments = command.load()
        add_arguments(sub.add_parser(command.name, help=(add_arguments.__doc__ or "").strip()))
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        print(f"llmpool: configuration error\n{exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
