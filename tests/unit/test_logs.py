"""The one log configuration: human and JSON lines, the job fields, masked secrets, adopted loggers,
and what Celery's lines about a chat task become. Real processes: tests/integration/test_flower_and_logs.py."""

from __future__ import annotations

import io
import json
import logging
import threading
from collections.abc import Iterator

import pytest

from llmpool.auth import tt_studio_jwt
from llmpool.dev.stack.supervisor import Supervisor, json_line
from llmpool.errors import ConfigError
from llmpool.logs import MASK, configure_logging, job_context, set_identity, set_job_field
from llmpool.settings import Settings, load_settings
from workers.flower_options import PURGE_OFFLINE_AFTER, flower_environment
from workers.logging_setup import HIDDEN_POOL_ARGS, ChatTaskLines

SECRET = "jwt-secret-that-must-not-show-1234"


def settings(**values: object) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.fixture
def restore_root() -> Iterator[None]:
    """configure_logging changes the root logger: put it back as pytest had it."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    uvicorn = logging.getLogger("uvicorn.access")
    uvicorn_state = (list(uvicorn.handlers), uvicorn.propagate)
    yield
    root.handlers, root.level = handlers, level
    uvicorn.handlers, uvicorn.propagate = uvicorn_state
    set_identity(service="llmpool")


def capture(fmt: str, **values: object) -> io.StringIO:
    stream = io.StringIO()
    configure_logging(settings(agent_log_format=fmt, **values), service="worker", stream=stream)
    return stream


def test_json_lines_carry_the_bound_job_and_nothing_when_none_is(restore_root: None):
    stream = capture("json")
    log = logging.getLogger("llmpool.test")
    log.info("before")
    with job_context("job-1", attempt=2):
        log.info("claimed")
        set_job_field("endpoint", "ep-a")
        log.warning("calling %s", "ep-a")
    log.info("after")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["message"] for line in lines] == ["before", "claimed", "calling ep-a", "after"]
    assert [(line.get("job_id"), line.get("endpoint"), line.get("attempt")) for line in lines] == [
        (None, None, None), ("job-1", None, 2), ("job-1", "ep-a", 2), (None, None, None)]
    assert all(line["service"] == "worker" and line["logger"] == "llmpool.test" for line in lines)
    assert lines[2]["level"] == "WARNING" and "job_id" not in lines[0]


def test_a_line_names_its_own_job_over_the_bound_one(restore_root: None):
    stream = capture("json")
    with job_context("bound"):
        logging.getLogger("llmpool.sweep").info("handed back", extra={"job_id": "other"})
    assert json.loads(stream.getvalue())["job_id"] == "other"


def test_threads_do_not_share_a_bound_job(restore_root: None):
    stream = capture("json")
    with job_context("main-thread-job"):
        thread = threading.Thread(target=lambda: logging.getLogger("x").info("elsewhere"))
        thread.start()
        thread.join()
    assert "job_id" not in json.loads(stream.getvalue())


def test_human_lines_name_the_service_and_the_job(restore_root: None):
    stream = capture("human")
    set_identity(node="w1@host")
    with job_context("job-9", attempt=1, endpoint="ep-b"):
        logging.getLogger("llmpool.runner").info("failover: job job-9 moves from a to b")
    line = stream.getvalue().strip()
    assert " INFO worker[" in line and "w1@host llmpool.runner: failover: job job-9" in line
    assert line.endswith("[job=job-9 endpoint=ep-b attempt=1]")


@pytest.mark.parametrize("fmt", ["human", "json"])
def test_secrets_the_settings_hold_are_masked_whoever_logs_them(restore_root: None, fmt: str):
    stream = capture(fmt, jwt_secret=SECRET, agent_flower_basic_auth="ops:flower-pass-77")
    log = logging.getLogger("some.library")
    log.warning("connecting with %s", SECRET)
    log.warning("Authorization: Bearer %s", tt_studio_jwt(SECRET))
    log.warning("basic auth ops:flower-pass-77 and the password alone: flower-pass-77")
    try:
        raise RuntimeError(f"failed with {SECRET}")
    except RuntimeError:
        log.exception("boom")
    text = stream.getvalue()
    assert SECRET not in text and tt_studio_jwt(SECRET) not in text and "flower-pass-77" not in text
    assert text.count(MASK) >= 5


def test_debug_mode_is_debug_and_a_given_level_wins_otherwise(restore_root: None):
    configure_logging(settings(agent_debug_mode=True), service="api", level=logging.WARNING, stream=io.StringIO())
    assert logging.getLogger().level == logging.DEBUG
    configure_logging(settings(agent_log_level="ERROR"), service="api", stream=io.StringIO())
    assert logging.getLogger().level == logging.ERROR
    configure_logging(settings(), service="api", level=logging.WARNING, stream=io.StringIO())
    assert logging.getLogger().level == logging.WARNING
    assert logging.getLogger("httpx").level == logging.WARNING  # a line per request is DEBUG's business


def test_configuring_again_replaces_our_handler_and_adopts_uvicorns(restore_root: None):
    uvicorn = logging.getLogger("uvicorn.access")
    level = uvicorn.level  # the in-process mock LLM of other tests quiets this logger to WARNING
    uvicorn.setLevel(logging.INFO)
    uvicorn.addHandler(logging.StreamHandler(io.StringIO()))
    uvicorn.propagate = False
    try:
        first = capture("json")
        second = capture("json")
        uvicorn.info("GET / 200")
        assert first.getvalue() == "" and json.loads(second.getvalue())["logger"] == "uvicorn.access"
        assert uvicorn.handlers == [] and uvicorn.propagate
    finally:
        uvicorn.setLevel(level)


def test_celerys_lines_about_a_chat_task_name_its_job_and_its_pool_line_shows_no_message():
    received = logging.LogRecord("celery.worker.strategy", logging.INFO, "f", 1, "Task %(name)s[%(id)s] received",
                                 None, None)
    received.args = {"name": "llmpool.chat", "id": "job-7", "args": "(...)", "kwargs": "{}", "eta": None}
    received.job_id = None
    control = logging.LogRecord("celery.worker.strategy", logging.INFO, "f", 1, "Task %(name)s[%(id)s] received",
                                None, None)
    control.args = {"name": "llmpool.control.discover", "id": "t-1"}
    applied = logging.LogRecord("celery.pool", logging.DEBUG, "f", 1, "TaskPool: Apply %s (args:%s kwargs:%s)",
                                ("fn", "('llmpool.chat', 'job-7', {}, b'{\"content\": \"secret text\"}')", "{}"), None)
    lines = ChatTaskLines()
    assert lines.filter(received) and lines.filter(control) and lines.filter(applied)
    assert received.job_id == "job-7" and getattr(control, "job_id", None) is None
    assert applied.getMessage() == f"TaskPool: Apply {HIDDEN_POOL_ARGS}"


@pytest.mark.parametrize(("value", "ok"), [("human", True), ("JSON", True), ("xml", False)])
def test_log_format_is_human_or_json(value: str, ok: bool):
    if ok:
        assert settings(agent_log_format=value).agent_log_format == value.lower()
    else:
        with pytest.raises(ConfigError, match="AGENT_LOG_FORMAT"):
            load_settings(_env_file=None, agent_log_format=value)


@pytest.mark.parametrize("value", ["nocolon", ":pw", "ops:", "a:b,c:d"])
def test_flower_basic_auth_must_be_user_colon_password_and_is_never_echoed(value: str):
    with pytest.raises(ConfigError, match="AGENT_FLOWER_BASIC_AUTH") as error:
        load_settings(_env_file=None, agent_flower_basic_auth=value)
    assert value not in str(error.value)


def test_flower_gets_its_auth_through_its_environment_and_purges_offline_workers():
    environ: dict[str, str] = {}
    flower_environment(settings(agent_flower_basic_auth="ops:pw"), environ)
    assert environ == {"FLOWER_BASIC_AUTH": "ops:pw", "FLOWER_PURGE_OFFLINE_WORKERS": str(PURGE_OFFLINE_AFTER)}
    assert settings(agent_flower_basic_auth="ops:pw").redacted()["agent_flower_basic_auth"] == "***"
    untouched = {"FLOWER_PURGE_OFFLINE_WORKERS": "5"}
    flower_environment(settings(), untouched)
    assert untouched == {"FLOWER_PURGE_OFFLINE_WORKERS": "5"}  # no auth set: Flower's default (API closed)


def test_llmpool_ups_own_lines_and_its_parts_plain_lines_become_json_lines():
    out = io.StringIO()
    supervisor = Supervisor(out=out, json_lines=True)
    supervisor.say("starting\nsecond line")
    supervisor.say('{"level": "INFO", "service": "worker", "message": "ready"}', name="worker")
    supervisor.say(" -------------- banner", name="worker")
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(line["service"], line["message"]) for line in lines] == [
        ("llmpool", "starting"), ("llmpool", "second line"), ("worker", "ready"), ("worker", " -------------- banner")]
    assert json_line("{not json", name="api") != "{not json"
