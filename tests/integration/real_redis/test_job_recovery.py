"""Job leases, parking, fencing and recovery on a real Redis: tests/unit/test_job_recovery.py's tests."""

from tests.unit.test_job_recovery import *  # noqa: F403 - the very same tests, with their fixtures
