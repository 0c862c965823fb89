"""`python -m llmpool.dev.mock_tools`: mock Tavily and E2B servers until Ctrl-C or SIGTERM.

Point llmpool at them with AGENT_TAVILY_URL=<tavily url>, TAVILY_API_KEY=<key>,
E2B_API_URL=<e2b url>, E2B_SANDBOX_URL=<e2b url>, E2B_API_KEY=<key>.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from llmpool.dev.mock_tools.e2b import MockE2B
from llmpool.dev.mock_tools.server import MockTools
from llmpool.dev.mock_tools.tavily import MockTavily


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llmpool.dev.mock_tools", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--tavily-port", type=int, default=8091)
    parser.add_argument("--e2b-port", type=int, default=8092)
    parser.add_argument("--tavily-key", default="tvly-mock-key")
    parser.add_argument("--e2b-key", default="e2b_mock_key")
    args = parser.parse_args(argv)
    mocks = MockTools(host=args.host, tavily_port=args.tavily_port, e2b_port=args.e2b_port,
                      tavily=MockTavily(api_key=args.tavily_key), e2b=MockE2B(api_key=args.e2b_key))
    stop = threading.Event()
    # Our own handlers: a process started in the background inherits SIGINT ignored, and Ctrl-C would not stop it.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    with mocks:
        print(f"mock Tavily: {mocks.tavily_url}\nmock E2B (API and sandbox): {mocks.e2b_url}", flush=True)
        stop.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
