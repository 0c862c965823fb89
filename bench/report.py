"""Where a scenario's figures land: <scenario>.json with the machine, <scenario>.md, and README.md.

The JSON says what ran where (cores, Python, Redis version, date, git commit) so that figures from
two machines are never compared unknowingly; the Markdown tables put each figure beside its goal.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import re
import subprocess
from pathlib import Path
from typing import Any

from bench.scenario import Result, Row
from llmpool.dev.redis_server import find_redis_server

__all__ = ["goals_table", "machine", "table", "write_result", "write_summary"]

ROOT = Path(__file__).resolve().parent.parent


def _git_commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head}-dirty" if dirty else head


def _redis_version() -> str:
    try:
        out = subprocess.run([find_redis_server(), "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    found = re.search(r"v=(\S+)", out)
    return found.group(1) if found else out.strip()


def machine() -> dict[str, Any]:
    return {"cores": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
            "redis": _redis_version(), "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "git_commit": _git_commit()}


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value).replace("|", "\\|")


def _verdict(row: Row) -> str:
    return {True: "met", False: "missed", None: ""}[row.met]


def table(rows: list[Row]) -> str:
    lines = ["| figure | value | goal | |", "| --- | --- | --- | --- |"]
    lines += [f"| {_cell(r.metric)} | {_cell(r.value)} | {_cell(r.goal)} | {_verdict(r)} |" for r in rows]
    return "\n".join(lines)


def write_result(out: Path, name: str, result: Result, *, wall_s: float, quick: bool,
                 host: dict[str, Any]) -> dict[str, Any]:
    """Write <name>.json and <name>.md into `out`; the JSON document."""
    doc = {"scenario": name, "quick": quick, "wall_s": round(wall_s, 1), "machine": host,
           "figures": result.figures, "rows": [vars(r) for r in result.rows],
           "plots": [p.name for p in result.plots], "skipped": result.skipped}
    (out / f"{name}.json").write_text(json.dumps(doc, indent=2, default=str))
    text = [f"## {name}", "", table(result.rows), ""]
    text += [f"Skipped: {why}" for why in result.skipped]
    text += [f"![{name}]({p.name})" for p in result.plots]
    text.append(f"\n{wall_s:.0f} s wall time{' (quick run)' if quick else ''}.\n")
    (out / f"{name}.md").write_text("\n".join(text))
    return doc


def goals_table(docs: list[dict[str, Any]], *, goals_only: bool = True) -> str:
    """One table over the scenarios' JSON documents: every row with a goal (or every row)."""
    return table([Row(f"{doc['scenario']}: {r['metric']}", r["value"], r["goal"], r["met"])
                  for doc in docs for r in doc["rows"] if r["goal"] or not goals_only])


def write_summary(out: Path) -> None:
    """README.md: every scenario table found in `out`, with the machine of the newest run."""
    docs = [json.loads(p.read_text()) for p in sorted(out.glob("*.json"))]
    docs = [d for d in docs if isinstance(d, dict) and "rows" in d and "machine" in d]
    if not docs:
        return
    host = max(docs, key=lambda d: d["machine"]["date"])["machine"]
    parts = ["# Benchmark results", "",
             f"{host['cores']} cores, Python {host['python']}, Redis {host['redis']}, commit "
             f"{host['git_commit']}, {host['date']}. The scenarios' wall times add up to "
             f"{sum(d['wall_s'] for d in docs) / 60:.1f} min.", "", "Every figure that has a goal:", "",
             goals_table(docs), ""]
    for doc in docs:
        parts += [f"## {doc['scenario']}{' (quick)' if doc['quick'] else ''}", "",
                  table([Row(**r) for r in doc["rows"]]), ""]
        parts += [f"Skipped: {why}" for why in doc["skipped"]]
        parts += [f"![{doc['scenario']}]({name})" for name in doc["plots"]]
        parts += [f"{doc['wall_s']:.0f} s wall time, {doc['machine']['date']}.", ""]
    (out / "README.md").write_text("\n".join(parts))
