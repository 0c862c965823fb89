"""The bench's pure parts: the sliding-window count of the rate-limit scenario and the result files."""

from __future__ import annotations

import json
from pathlib import Path

from bench.ratelimit import max_in_window
from bench.report import table, write_result, write_summary
from bench.scenario import Result, Row

HOST = {"cores": 2, "python": "3.11.7", "platform": "x", "redis": "7.0.15", "date": "2026-11-29T20:00:00+00:00",
        "git_commit": "abc1234"}


def test_max_in_window_finds_the_densest_window_not_the_first() -> None:
    times = [0.0, 20.0, 21.0, 22.0, 23.0, 30.0]
    assert max_in_window(times, 5.0) == 4  # [20, 25), not the window from the first request
    assert max_in_window(times, 2.5) == 3  # [20, 22.5)
    assert max_in_window([], 10.0) == 0


def test_max_in_window_is_half_open() -> None:
    assert max_in_window([0.0, 1.0, 2.0], 1.0) == 1
    assert max_in_window([0.0, 0.5, 1.0], 1.0) == 2


def test_table_puts_each_figure_beside_its_goal() -> None:
    text = table([Row("ratio", 0.72, ">= 0.9", False), Row("rss", 120.0, "< 150", True), Row("note", "a|b")])
    lines = text.splitlines()
    assert lines[2] == "| ratio | 0.72 | >= 0.9 | missed |"
    assert lines[3] == "| rss | 120 | < 150 | met |"
    assert lines[4] == "| note | a\\|b |  |  |"


def test_result_files_and_summary(tmp_path: Path) -> None:
    png = tmp_path / "one.png"
    png.write_bytes(b"png")
    result = Result({"jobs": 3}, [Row("jobs/s", 12.5, ">= 10", True)], [png], ["part B: not installed"])
    write_result(tmp_path, "one", result, wall_s=4.24, quick=True, host=HOST)
    write_result(tmp_path, "two", Result({}, [Row("x", 1)]), wall_s=1.0, quick=False,
                 host={**HOST, "date": "2026-11-29T21:00:00+00:00", "git_commit": "def5678"})
    doc = json.loads((tmp_path / "one.json").read_text())
    assert doc["machine"] == HOST and doc["wall_s"] == 4.2 and doc["plots"] == ["one.png"]
    assert doc["skipped"] == ["part B: not installed"] and doc["rows"][0]["met"] is True
    md = (tmp_path / "one.md").read_text()
    assert "| jobs/s | 12.5 | >= 10 | met |" in md and "Skipped: part B" in md and "![one](one.png)" in md
    write_summary(tmp_path)
    summary = (tmp_path / "README.md").read_text()
    assert "## one (quick)" in summary and "## two\n" in summary
    assert "commit def5678" in summary  # the machine line is the newest run's
    assert "| one: jobs/s | 12.5 | >= 10 | met |" in summary  # the goals table: rows with a goal only
    assert "| two: x |" not in summary


def test_publish_replaces_the_readme_table_and_copies_the_timeline(tmp_path: Path) -> None:
    from bench.publish import END, START, publish

    results, docs_dir = tmp_path / "results", tmp_path / "docs"
    results.mkdir()
    (results / "failover.png").write_bytes(b"timeline")
    write_result(results, "failover", Result({}, [Row("jobs lost", 0, "0", True), Row("LiteLLM lost", 2)]),
                 wall_s=1.0, quick=False, host=HOST)
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{START}\n\nbefore\n")
    publish(results, readme, docs_dir)
    first = readme.read_text()
    assert "| failover: jobs lost | 0 | 0 | met |" in first and "| failover: LiteLLM lost | 2 |" in first
    assert first.count(START) == 1 and first.count(END) == 1 and "before" in first
    write_result(results, "failover", Result({}, [Row("jobs lost", 1, "0", False)]), wall_s=1.0, quick=False,
                 host=HOST)
    publish(results, readme, docs_dir)
    second = readme.read_text()
    assert "| failover: jobs lost | 1 | 0 | missed |" in second and "LiteLLM lost" not in second
    assert second.count(START) == 1 and (docs_dir / "failover.png").read_bytes() == b"timeline"
