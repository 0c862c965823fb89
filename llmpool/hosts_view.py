"""What the workers' heartbeats look like to people: `llmpool status`'s table of hosts and workers."""

from __future__ import annotations

from typing import Any

__all__ = ["render_hosts"]

GIB = 1024 ** 3
MIB = 1024 ** 2


def _host_line(name: str, host: dict[str, Any] | None, gpus: list[dict[str, Any]]) -> str:
    if not host:
        return f"host {name}: no figures yet"
    memory = (f"mem {host['memory_percent']:.0f}% of {host['memory_total_bytes'] / GIB:.1f} GiB"
              if host.get("memory_total_bytes") else "mem ?")
    load = " ".join(f"{host.get(k, 0):.2f}" for k in ("load_1m", "load_5m", "load_15m"))
    line = f"host {name}: cpu {host.get('cpu_percent', 0):.0f}% of {host.get('cpu_count', '?')}  {memory}  load {load}"
    for gpu in gpus:
        line += (f"\n  gpu{gpu['index']} {gpu['name']}: {gpu['utilization_percent']}% busy, "
                 f"{gpu['memory_used_bytes'] / GIB:.1f}/{gpu['memory_total_bytes'] / GIB:.1f} GiB")
    return line


def _worker_row(worker: dict[str, Any]) -> list[str]:
    process = worker.get("process") or {}
    pool = f"{worker.get('pool', '?')}/{worker.get('concurrency', '?')}"
    rss = f"{process['rss_bytes'] / MIB:.0f} MiB" if process.get("rss_bytes") else "-"
    cpu = f"{process['cpu_percent']:.0f}%" if "cpu_percent" in process else "-"
    return [str(worker.get("node", "?")), pool, str(worker.get("in_flight_jobs", "-")), cpu, rss,
            str(worker.get("pid", "-"))]


def render_hosts(hosts: dict[str, dict[str, Any]]) -> str:
    """Each host's figures, then a row per worker on it (pool, chat jobs in flight, CPU, RSS)."""
    if not hosts:
        return "no live workers"
    blocks = []
    for name, entry in sorted(hosts.items()):
        rows = [["  worker", "pool", "in-flight", "cpu", "rss", "pid"]]
        rows += [["  " + r[0], *r[1:]] for r in map(_worker_row, entry["workers"])]
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        table = "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows)
        blocks.append(_host_line(name, entry.get("host"), entry.get("gpus") or []) + "\n" + table)
    return "\n".join(blocks)
