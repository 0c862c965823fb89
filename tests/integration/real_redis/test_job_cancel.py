"""Cancelling a job on a real Redis: tests/unit/test_job_cancel.py's tests."""

from tests.unit.test_job_cancel import *  # noqa: F403 - the very same tests, with their fixtures
