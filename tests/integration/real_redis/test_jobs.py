"""The job store's scripts on a real Redis: tests/unit/test_jobs.py's tests."""

from tests.unit.test_jobs import *  # noqa: F403 - the very same tests, with their fixtures
