"""A mock of OpenAI-compatible LLM containers and of the TT-Studio backend that lists them.

Each container serves POST /v1/chat/completions (streaming or not, deterministic replies),
GET /v1/models and GET /health on its own port, with knobs (ttft, tokens_per_second, reply, ...)
and faults (refuse, error500, error400, ratelimit, hang, drop_mid_stream, bad_json, slow_health,
trickle, endless_stream, huge_body, huge_line; real servers' dialects: cut_stream, cut_stream_eof,
validation_500 and the knobs send_usage and interrupt_requests, in dialects.py) changeable at
run time. A control server lists them at GET /models/deployed/ in the backend's format and drives them under /_mock/.
`ContainerSpec(flavor="ollama")` makes a container look like Ollama: GET /api/tags and
/api/version instead of /health, and no backend listing. Flavours "llamacpp" (loading 503s,
/props, /slots, a slot queue), "vllm" (/metrics) and "lmstudio" (/api/v0/models with state)
play other servers (flavors.py; knobs loading, slots, external_running, external_waiting).

    with MockLLM([ContainerSpec(name="llm-a", ttft=0.01)]) as mock:
        mock.url("llm-a"); mock.set_fault("llm-a", "error500", requests=2); mock.stats("llm-a")

`MockControl(backend_url)` offers the same methods over HTTP for a mock in another process
(`llmpool mock-llm`). Stats: requests, chat_requests, by_status, in_flight, peak_in_flight
(chat completions only), last_authorization (of /v1/ requests), last_body, records.
"""

from llmpool.dev.mock_llm.cli import add_arguments, run
from llmpool.dev.mock_llm.control import MockControl, MockDriver
from llmpool.dev.mock_llm.server import MockLLM
from llmpool.dev.mock_llm.state import (
    BACKEND_FAULTS,
    FAULTS,
    FLAVORS,
    BadConfig,
    Conflict,
    ContainerSpec,
    Knobs,
    MockError,
    UnknownContainer,
    deploy_id,
)

__all__ = [
    "BACKEND_FAULTS", "FAULTS", "FLAVORS", "BadConfig", "Conflict", "ContainerSpec", "Knobs", "MockControl",
    "MockDriver", "MockError", "MockLLM", "UnknownContainer", "add_arguments", "deploy_id", "run",
]
