"""Loading the Lua scripts that live beside this module, once per Redis client, and sending several
of them (with plain commands) in one round trip.

A script may reuse another whole: a line `--@include name` becomes `local function name(KEYS, ARGV)`
wrapping `llmpool/lua/{name}.lua`, so one script can claim a job and admit its call with the very
code that does each alone (llmpool/lua/job_start.lua).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from typing import Any

from redis.exceptions import NoScriptError

__all__ = ["lua_source", "register", "ScriptCall", "Command", "send_together"]

INCLUDE = re.compile(r"^--@include (\w+)$", re.MULTILINE)


@cache
def lua_source(name: str) -> str:
    """The text of `llmpool/lua/{name}.lua`, its `--@include` lines replaced by the scripts they name."""
    text = files("llmpool").joinpath("lua", f"{name}.lua").read_text(encoding="utf-8")
    return INCLUDE.sub(lambda m: f"local function {m[1]}(KEYS, ARGV)\n{lua_source(m[1])}\nend", text)


def register(client: Any, name: str) -> Any:
    """A callable script (EVALSHA, falling back to EVAL) bound to `client`."""
    return client.register_script(lua_source(name))


@dataclass(frozen=True)
class ScriptCall:
    """One script run to send with others: a registered script, its keys and args, and what to do
    with its reply (called with it once the round trip is back)."""

    script: Any  # redis.commands.core.Script
    keys: Sequence[Any]
    args: Sequence[Any]
    on_reply: Callable[[Any], Any] | None = None


Command = tuple[Any, ...]  # a plain command: ("HINCRBY", key, field, amount)


def send_together(client: Any, calls: Sequence[ScriptCall | Command]) -> list[Any]:
    """Send every call in one pipelined round trip (not a transaction) and return their replies.

    redis-py's own pipelined scripts ask SCRIPT EXISTS first, a round trip of its own each time; here
    each goes as a bare EVALSHA, and only a script Redis does not know (after a restart or a SCRIPT
    FLUSH) is loaded and run again, on its own: the rare case pays, the usual one does not.
    A reply that is an error is returned as the exception (each caller judges its own calls).
    """
    pipe = client.pipeline(transaction=False)
    for call in calls:
        if isinstance(call, ScriptCall):
            pipe.evalsha(call.script.sha, len(call.keys), *call.keys, *call.args)
        else:
            pipe.execute_command(*call)
    replies = pipe.execute(raise_on_error=False)
    for n, (call, reply) in enumerate(zip(calls, replies, strict=True)):
        if isinstance(call, ScriptCall) and isinstance(reply, NoScriptError):
            replies[n] = call.script(keys=list(call.keys), args=list(call.args))
    for call, reply in zip(calls, replies, strict=True):
        if isinstance(call, ScriptCall) and call.on_reply is not None and not isinstance(reply, Exception):
            call.on_reply(reply)
    return replies
