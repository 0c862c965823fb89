"""Loading the Lua scripts that live beside this module, once per Redis client."""

from __future__ import annotations

from functools import cache
from importlib.resources import files
from typing import Any

__all__ = ["lua_source", "register"]


@cache
def lua_source(name: str) -> str:
    """The text of `llmpool/lua/{name}.lua`."""
    return files("llmpool").joinpath("lua", f"{name}.lua").read_text(encoding="utf-8")


def register(client: Any, name: str) -> Any:
    """A callable script (EVALSHA, falling back to EVAL) bound to `client`."""
    return client.register_script(lua_source(name))
