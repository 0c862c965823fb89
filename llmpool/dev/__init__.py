"""What only a developer's machine runs: the mock LLM, the `llmpool up` stack, the embedded Redis.

Production code never imports this package (an import-linter contract says so); the `llmpool`
command finds its subcommands through the `llmpool.commands` entry points.
"""
