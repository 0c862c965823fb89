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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llmpool", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    from llmpool import devstack, mock_llm

    devstack.add_arguments(sub.add_parser("up", help="start Redis, worker, beat, API, Flower"))
    mock_llm.add_arguments(sub.add_parser("mock-llm", help="run the mock OpenAI-compatible LLM"))
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
