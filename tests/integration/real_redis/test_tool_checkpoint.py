"""The tool loop's checkpoint script (job_step.lua) on a real Redis: tests/unit/test_tool_loop.py's test of it."""

from tests.unit.test_tool_loop import (  # noqa: F401
    test_a_cancelled_job_drops_its_checkpoint,
    test_a_checkpoint_is_written_only_by_the_run_holding_the_job,
)
