"""`python -m llmpool.dev.mock_llm`: the same as `llmpool mock-llm`, without the rest of the CLI."""

from __future__ import annotations

import argparse
import sys

from llmpool.dev.mock_llm.cli import add_arguments


def main(argv: list[str] | None = None) -> int:
    """Parse the mock-llm options and run it."""
    parser = argparse.ArgumentParser(prog="python -m llmpool.dev.mock_llm", description=__doc__)
    add_arguments(parser)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
