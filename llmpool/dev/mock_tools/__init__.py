"""Mock Tavily and E2B servers (real HTTP) for the built-in tools' tests and for `llmpool up`-style use."""

from llmpool.dev.mock_tools.e2b import MockE2B
from llmpool.dev.mock_tools.server import MockTools
from llmpool.dev.mock_tools.tavily import MockTavily

__all__ = ["MockE2B", "MockTavily", "MockTools"]
