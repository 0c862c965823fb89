"""A call's short, renewed concurrency lease on a real Redis: tests/unit/test_call_leases.py's tests."""

from tests.unit.test_call_leases import *  # noqa: F403 - the very same tests, with their fixtures
