"""`python -m bench.publish [--results DIR]` (`make bench-publish`): the latest run into the README.

Replaces the table between README.md's `<!-- bench-table -->` markers with every figure of every
scenario, baselines included, each beside its goal (with the run's machine) and copies the failover timeline to
docs/performance/failover.png, the one plot the README shows.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from pathlib import Path

from bench.__main__ import RESULTS, SCENARIOS
from bench.report import ROOT, goals_table

START, END = "<!-- bench-table -->", "<!-- /bench-table -->"


def publish(results: Path, readme: Path, plot_dir: Path) -> None:
    docs = [json.loads((results / f"{name}.json").read_text()) for name in SCENARIOS
            if (results / f"{name}.json").exists()]
    if not docs:
        raise SystemExit(f"no results in {results}: run `make bench` first")
    host = max(docs, key=lambda d: d["machine"]["date"])["machine"]
    runs = sorted({(d["machine"]["date"], d["machine"]["git_commit"]) for d in docs})
    when = ", ".join(f"{date} (commit {commit})" for date, commit in runs)
    block = "\n".join([START, "", goals_table(docs, goals_only=False), "",
                       f"{host['cores']} cores, Python {host['python']}, Redis {host['redis']}; run at {when}"
                       + ("; quick run" if any(d["quick"] for d in docs) else "") + ".", "", END])
    text = readme.read_text()
    pattern = re.compile(re.escape(START) + r".*?" + re.escape(END), re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text, count=1)
    elif START in text:
        text = text.replace(START, block, 1)
    else:
        raise SystemExit(f"{readme} has no {START} marker")
    readme.write_text(text)
    if (results / "failover.png").exists():
        plot_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(results / "failover.png", plot_dir / "failover.png")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.publish", description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    publish(args.results, ROOT / "README.md", ROOT / "docs" / "performance")
    return 0


if __name__ == "__main__":
    sys.exit(main())
