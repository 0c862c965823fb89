"""The breaker, leases, rates and pauses on a real Redis: tests/unit/test_admission.py's tests."""

from tests.unit.test_admission import *  # noqa: F403 - the very same tests, with their fixtures
