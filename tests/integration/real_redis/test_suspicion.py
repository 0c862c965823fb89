"""TTFT histograms, suspicion, trials and the share on a real Redis: tests/unit/test_suspicion.py's tests."""

from tests.unit.test_suspicion import *  # noqa: F403 - the very same tests, with their fixtures
