"""The baseline: a bare Celery task making the same streaming HTTP call, no llmpool around it."""

from __future__ import annotations

import json
import os
from typing import Any

import httpx
from celery import Celery

from llmpool.settings import load_settings
from workers.config import celery_config

app = Celery("bench-bare")
app.conf.update(celery_config(load_settings()))
app.conf.task_default_queue = "bench.bare"
app.conf.task_queues = None
# Every connection kept alive, as llmpool's client keeps them (llmpool.http_deadline): httpx's default
# keeps 20, so with more threads than that each call beyond them paid a TCP connect.
_connections = int(os.environ.get("BENCH_CONNECTIONS", "128"))
_client = httpx.Client(limits=httpx.Limits(max_connections=_connections, max_keepalive_connections=_connections),
                       timeout=60)


@app.task(name="bench.bare_chat")
def bare_chat(url: str, body: dict[str, Any]) -> dict[str, Any]:
    content = ""
    with _client.stream("POST", url, json=body) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if line.startswith("data:") and line[5:].strip() != "[DONE]":
                chunk = json.loads(line[5:])
                for choice in chunk.get("choices") or []:
                    content += (choice.get("delta") or {}).get("content") or ""
    return {"content": content}


@app.task(name="bench.bare_chat_limited", rate_limit=os.environ.get("BENCH_RATE_LIMIT"))
def bare_chat_limited(url: str, body: dict[str, Any]) -> dict[str, Any]:
    """The same call under Celery's own rate_limit, which each worker applies on its own."""
    return bare_chat(url, body)
