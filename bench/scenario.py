"""What a bench scenario hands back, and the sizes it runs at.

A scenario is one module under bench/ with a `run(size: Size) -> Result` function, listed in
bench/__main__.py's SCENARIOS. It measures, it draws its plots into `size.out`, and the runner
writes its JSON and Markdown table; figures are printed and saved, never asserted.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Result", "Row", "Size", "Scenario"]


@dataclass(frozen=True)
class Size:
    """How big a run is: `quick` is the smoke run (seconds each) the tests use; `out` receives plots."""

    quick: bool
    out: Path

    def pick(self, full: Any, quick: Any) -> Any:
        """`full` in a real run, `quick` in the smoke run."""
        return quick if self.quick else full


@dataclass(frozen=True)
class Row:
    """One line of the scenario's table: a figure beside the goal it meets or misses."""

    metric: str
    value: object
    goal: str = ""
    met: bool | None = None  # None: no goal, or not measurable in this run


@dataclass
class Result:
    figures: dict[str, Any]  # everything measured, as JSON
    rows: list[Row]  # the table
    plots: list[Path] = field(default_factory=list)  # PNGs written into Size.out
    skipped: list[str] = field(default_factory=list)  # parts not run, and why (never silently)


Scenario = Callable[[Size], Result]
