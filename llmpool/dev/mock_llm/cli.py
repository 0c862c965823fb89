"""`llmpool mock-llm`: run mock containers and the mock backend until SIGINT or SIGTERM."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from typing import Any

from llmpool.dev.mock_llm.container import bind_socket
from llmpool.dev.mock_llm.server import MockLLM
from llmpool.dev.mock_llm.state import ContainerSpec, MockError

__all__ = ["add_arguments", "run"]

log = logging.getLogger("llmpool.dev.mock_llm")
# Models the --extra-containers get, in order (name, Hugging Face id), for demos.
EXTRA_MODELS = (
    ("Llama-3.1-8B-Instruct", "meta-llama/Llama-3.1-8B-Instruct"),
    ("Mistral-7B-Instruct-v0.3", "mistralai/Mistral-7B-Instruct-v0.3"),
    ("Llama-3.2-1B-Instruct", "meta-llama/Llama-3.2-1B-Instruct"),
    ("Qwen2.5-7B-Instruct", "Qwen/Qwen2.5-7B-Instruct"),
    ("Falcon-7B-Instruct", "tiiuae/falcon-7b-instruct"),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the mock-llm options to `parser` and make `run` its command."""
    add = parser.add_argument
    add("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    add("--advertise-host", default=None,
        help="host name in printed URLs and the backend listing (default: --host)")
    add("--port", type=int, default=7000, help="port of the first container (default 7000)")
    add("--control-port", type=int, default=None,
        help="port of the backend/control server (default: port+100; 0 = none)")
    add("--name", default="mock-llm", help="container name (default mock-llm)")
    add("--model", default="Llama-3.1-70B-Instruct", help="model_name of the container")
    add("--hf-model-id", default=None, help="hf_model_id (default meta-llama/<model>)")
    add("--model-type", default="chat", help="model_type listed by the backend (default chat)")
    add("--token", default=os.environ.get("MOCK_LLM_TOKEN"),
        help="required bearer token (better: env MOCK_LLM_TOKEN, which ps does not show)")
    add("--ttft", type=float, default=0.05, help="seconds to the first token (default 0.05)")
    add("--tps", type=float, default=50.0, help="tokens per second (default 50; 0 = no delay)")
    add("--extra-containers", type=int, default=0, metavar="N",
        help="N more containers on the next free ports, with other model names")
    add("--log-level", default="INFO", help="logging level (default INFO)")
    parser.set_defaults(func=run)


def build_specs(args: argparse.Namespace) -> list[ContainerSpec]:
    """The first container from the options, then the extra ones on the next free ports."""
    common: dict[str, Any] = {"token": args.token, "ttft": args.ttft,
                              "tokens_per_second": args.tps}
    specs = [ContainerSpec(name=args.name, model_name=args.model, hf_model_id=args.hf_model_id,
                           model_type=args.model_type, port=args.port, **common)]
    port = args.port
    for i in range(args.extra_containers):
        port = _next_free_port(args.host, port + 1, avoid={args.control_port})
        model, hf_id = EXTRA_MODELS[i % len(EXTRA_MODELS)]
        specs.append(ContainerSpec(name=f"{args.name}-{i + 2}", model_name=model,
                                   hf_model_id=hf_id, port=port, **common))
    return specs


def _next_free_port(host: str, start: int, *, avoid: set[int | None]) -> int:
    for port in range(start, 65536):
        if port in avoid:
            continue
        try:
            bind_socket(host, port).close()
        except (MockError, OSError):
            continue
        return port
    raise MockError(f"no free port at or above {start}")


def run(args: argparse.Namespace) -> int:
    """Run the mock until SIGINT or SIGTERM; 0 on a clean stop, 1 if it cannot start."""
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Our own per-request line replaces uvicorn's access log and start-up chatter.
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    logging.getLogger("uvicorn.error").setLevel(logging.WARNING)
    if args.control_port is None:
        args.control_port = args.port + 100
    try:
        specs = build_specs(args)
        mock = MockLLM(specs, host=args.host, control_port=args.control_port or None,
                       backend=bool(args.control_port), advertise_host=args.advertise_host,
                       ).start()
    except (MockError, OSError, TimeoutError) as exc:
        print(f"llmpool mock-llm: cannot start: {exc}", file=sys.stderr)
        return 1
    try:
        for container in mock.containers():
            model = container["spec"]["model_name"]
            print(f"{container['name']}: {container['url']}/v1/chat/completions  ({model})")
        if args.control_port:
            print(f"backend: {mock.backend_url}/models/deployed/  (control: /_mock/)")
        sys.stdout.flush()
        _wait_for_signal()
    finally:
        mock.stop()
    log.info("mock LLM stopped")
    return 0


def _wait_for_signal() -> None:
    """Block the main thread until SIGINT or SIGTERM."""
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set())
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        while not stop.wait(0.5):
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
