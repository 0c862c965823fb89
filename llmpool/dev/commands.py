"""The `llmpool` subcommands that only a developer's machine needs, found through entry points."""

from __future__ import annotations

import argparse

__all__ = ["mock_llm", "up"]


def up(parser: argparse.ArgumentParser) -> None:
    """start Redis, worker, beat, API, Flower and a demo LLM on this machine"""
    from llmpool.dev import stack

    stack.add_arguments(parser)


def mock_llm(parser: argparse.ArgumentParser) -> None:
    """run the mock OpenAI-compatible LLM and TT-Studio backend"""
    from llmpool.dev import mock_llm as mock

    mock.add_arguments(parser)
