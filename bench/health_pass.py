"""`python -m bench.health_pass`: one health pass over mock containers, some hanging, vs sequential.

The baseline is the TT-Studio agent's monitor, which probes endpoints one by one: here the same
`probe` calls against the same containers, run in a row. Both are measured in the same run; the
figures are printed and saved under bench/results/, never asserted.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from llmpool.dev.mock_llm import ContainerSpec, MockLLM
from llmpool.endpoints import Endpoint
from llmpool.prober import probe, probe_all

RESULTS = Path(__file__).parent / "results"


def _endpoints(mock: MockLLM, specs: list[ContainerSpec]) -> list[Endpoint]:
    return [Endpoint(id=s.name, chat_url=mock.url(s.name) + "/v1/chat/completions", model="m",
                     model_name=s.name, source="discovered") for s in specs]


def measure(timeout: float, *, endpoints: int = 20, hanging: int = 5) -> dict[str, Any]:
    """Time one concurrent pass and the same probes run one by one, at `timeout`."""
    specs = [ContainerSpec(name=f"bench-{i:02d}", fault="hang" if i < hanging else "none")
             for i in range(endpoints)]
    limits = httpx.Limits(max_connections=endpoints * 2)
    with MockLLM(specs, backend=False) as mock, httpx.Client(limits=limits) as http:
        targets = _endpoints(mock, specs)
        started = time.monotonic()
        results = probe_all(targets, http=http, timeout=timeout)
        concurrent_s = time.monotonic() - started
        started = time.monotonic()
        in_a_row = [probe(e, http=http, timeout=timeout) for e in targets]
        sequential_s = time.monotonic() - started
    return {
        "scenario": "health_pass", "endpoints": endpoints, "hanging": hanging, "timeout_s": timeout,
        "concurrent_pass_s": round(concurrent_s, 3), "sequential_pass_s": round(sequential_s, 3),
        "speedup": round(sequential_s / concurrent_s, 1),
        "healthy": {"concurrent": sum(r.ok for r in results.values()),
                    "sequential": sum(r.ok for r in in_a_row)},
    }


def main(argv: list[str] | None = None) -> int:
    """Measure at each timeout given (default: TT-Studio's 5 s, then 1 s), print and save."""
    parser = argparse.ArgumentParser(prog="python -m bench.health_pass")
    parser.add_argument("--timeouts", type=float, nargs="+", default=[5.0, 1.0])
    parser.add_argument("--endpoints", type=int, default=20)
    parser.add_argument("--hanging", type=int, default=5)
    args = parser.parse_args(argv)
    figures = [measure(t, endpoints=args.endpoints, hanging=args.hanging) for t in args.timeouts]
    text = json.dumps(figures, indent=2)
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"health_pass-{int(time.time())}.json").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
