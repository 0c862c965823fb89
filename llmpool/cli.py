"""The `llmpool` command: `up` (the whole dev stack), `mock-llm`, `status`, `check-config`."""

from __future__ import annotations

import argparse
import sys

from llmpool.errors import ConfigError

__all__ = ["main"]


def _cmd_check_config(args: argparse.Namespace) -> int:
    from llmpool.settings import issues_report, load_settings

    settings = load_settings()
    report = issues_report(settings)
    print(report or "Configuration OK")
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    import json

    import redis

    from llmpool.admission import Admitter
    from llmpool.keys import Keys
    from llmpool.registry import Registry
    from llmpool.settings import load_settings
    from llmpool.status_view import effective_current, endpoint_rows, render_table

    settings = load_settings()
    client = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=3, socket_timeout=5)
    keys = Keys(settings.agent_redis_prefix)
    try:
        snap = Registry(client, keys).snapshot()
        breakers = Admitter(client, keys).stats(list(snap.records))
    except redis.RedisError as exc:
        print(f"llmpool: cannot read the registry at {settings.redis_url}: {exc}", file=sys.stderr)
        return 1
    finally:
        client.close()
    rows = endpoint_rows(snap, checks_enabled=settings.agent_health_check_enabled, breakers=breakers)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    current = effective_current(snap.selection, breakers)
    waiting = "selected: none (waiting for an LLM)"
    print(f"selected: {current.id} ({current.model_name})" if current else waiting)
    if snap.pin:
        print(f"pinned:   {snap.pin}")
    print(render_table(rows) if rows else "no endpoints registered yet")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llmpool", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    from llmpool import devstack, mock_llm

    devstack.add_arguments(sub.add_parser("up", help="start Redis, worker, beat, API, Flower"))
    mock_llm.add_arguments(sub.add_parser("mock-llm", help="run the mock OpenAI-compatible LLM"))
    status = sub.add_parser("status", help="the endpoint registry and selection as a table")
    status.add_argument("--json", action="store_true", help="print the rows as JSON")
    status.set_defaults(func=_cmd_status)
    check = sub.add_parser("check-config", help="validate settings and print the issues report")
    check.set_defaults(func=_cmd_check_config)
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
