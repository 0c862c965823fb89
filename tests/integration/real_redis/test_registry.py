"""The registry's Redis side on a real Redis: tests/unit/test_registry.py's tests."""

from tests.unit.test_registry import *  # noqa: F403 - the very same tests, with their fixtures
