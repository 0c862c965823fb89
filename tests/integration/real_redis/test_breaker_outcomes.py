"""The outcome "down", the overdue refusal and recent cuts on a real Redis.

tests/unit/test_breaker_outcomes.py's tests, run as they are.
"""

from tests.unit.test_breaker_outcomes import *  # noqa: F403 - the very same tests, with their fixtures
