"""`python -m bench [scenario ...] [--quick] [--results DIR]`: every scenario on real parts.

Each scenario is one module under bench/ with `run(size) -> Result` (bench/scenario.py); add yours
to SCENARIOS below. For each, the runner prints its table and wall time and writes
<results>/<scenario>.json (figures plus the machine), <scenario>.md and its PNGs, then the summary
<results>/README.md. `--quick` runs tiny sizes (seconds each): the tests run it so the bench
cannot rot. Figures are never asserted: a table says which goals were met.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
import time
import traceback
from pathlib import Path

from bench.report import machine, table, write_result, write_summary
from bench.scenario import Scenario, Size
from bench.side_by_side import run_side_by_side

RESULTS = Path(__file__).parent / "results"

# name -> module under bench/ whose `run(size)` measures it; in the order `make bench` runs them.
SCENARIOS: dict[str, str] = {
    "overhead": "bench.overhead",
    "concurrency": "bench.concurrency",
    "failover": "bench.failover",
    "priority": "bench.priority",
    "ratelimit": "bench.ratelimit",
    "redis_cost": "bench.redis_cost",
    "inflight": "bench.inflight",
}
# Smoke-run scenarios side by side: they mostly wait, so all at once take about their CPU over
# the cores (7 at once: 43 s against 63 s four at once and 108 s one after another, loaded 2 cores).
QUICK_AT_ONCE = 8


def scenario(name: str) -> Scenario:
    run: Scenario = importlib.import_module(SCENARIOS[name]).run
    return run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("scenarios", nargs="*", metavar="scenario", help=f"default: all of {', '.join(SCENARIOS)}")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, seconds per scenario (a smoke run)")
    parser.add_argument("--results", type=Path, default=RESULTS, help=f"output directory (default {RESULTS})")
    parser.add_argument("--at-once", type=int, default=None, metavar="N",
                        help=f"scenarios run side by side, each its own process (default {QUICK_AT_ONCE} with "
                             "--quick, else 1: a full run's figures need the machine to themselves)")
    parser.add_argument("--no-summary", action="store_true", help=argparse.SUPPRESS)  # a side-by-side child
    args = parser.parse_args(argv)
    unknown = [name for name in args.scenarios if name not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario {', '.join(unknown)}; known: {', '.join(SCENARIOS)}")
    if args.at_once is not None and args.at_once < 1:
        parser.error(f"--at-once must be 1 or more, not {args.at_once}")
    args.scenarios = args.scenarios or list(SCENARIOS)
    args.results.mkdir(parents=True, exist_ok=True)
    # SIGTERM (the tests' timeout, a side-by-side parent) unwinds like Ctrl-C: every `finally` stops
    # the workers, mocks and Redis servers its scenario started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    at_once = args.at_once or (QUICK_AT_ONCE if args.quick else 1)
    if at_once > 1 and len(args.scenarios) > 1:
        for name in args.scenarios:
            scenario(name)  # imported before the forks: no child imports it again
        child_args = ["--results", str(args.results), "--no-summary", "--at-once", "1"] + ["--quick"] * args.quick
        failed = run_side_by_side(args.scenarios, lambda name: main([name, *child_args]), results=args.results,
                                  at_once=at_once)
        return _finish(args.results, failed)
    host, failed, began = machine(), [], time.monotonic()
    print(f"machine: {host}", flush=True)
    for name in args.scenarios:
        print(f"\n== {name}{' (quick)' if args.quick else ''}", flush=True)
        started = time.monotonic()
        try:
            result = scenario(name)(Size(quick=args.quick, out=args.results))
        except Exception:  # one broken scenario must not cost the others' figures
            traceback.print_exc()
            print(f"{name}: FAILED after {time.monotonic() - started:.0f} s", flush=True)
            failed.append(name)
            continue
        wall = time.monotonic() - started
        write_result(args.results, name, result, wall_s=wall, quick=args.quick, host=host)
        print(table(result.rows))
        for why in result.skipped:
            print(f"skipped: {why}")
        print(f"{name}: {wall:.0f} s wall time -> {args.results / (name + '.json')}", flush=True)
    minutes = (time.monotonic() - began) / 60
    print(f"\n{len(args.scenarios)} scenario(s): {minutes:.1f} min wall time in all", flush=True)
    if args.no_summary:
        return 1 if failed else 0
    return _finish(args.results, failed)


def _finish(results: Path, failed: list[str]) -> int:
    write_summary(results)
    if failed:
        print(f"\nfailed scenarios: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
