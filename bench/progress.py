"""A progress bar on a terminal, nothing when the output is a file or a pipe (CI, the tests)."""

from __future__ import annotations

import sys

from tqdm import tqdm

__all__ = ["bar"]


def bar(total: int, desc: str) -> tqdm:
    """A bar of `total` steps on stderr; disabled (updates are no-ops) when stderr is not a TTY."""
    return tqdm(total=total, desc=desc, unit="job", leave=False, disable=not sys.stderr.isatty(),
                dynamic_ncols=True)
