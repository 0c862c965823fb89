"""The folded round trips of a job's run on a real Redis: tests/unit/test_folded_trips.py's tests."""

from tests.unit.test_folded_trips import *  # noqa: F403 - the very same tests, with their fixtures
