"""Every Redis client llmpool makes, from REDIS_URL: one Redis, or the master that Sentinels name.

REDIS_URL takes kombu's forms: `redis://`, `rediss://`, `unix://`, and for Redis Sentinel
`sentinel://[[user]:password@]host[:port][/db]` parts joined by `;`, with the master's name in
AGENT_REDIS_MASTER_NAME. The same URL and name configure the Celery broker and result backend
(`celery_transport_options`), so the broker, the results and llmpool's own state follow one
failover together. As in kombu and Celery, the db and the master's credentials come from the first
part; the Sentinels themselves are reached without a password.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

import redis
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.asyncio.sentinel import Sentinel as AsyncSentinel
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel

if TYPE_CHECKING:
    from llmpool.settings import Settings

__all__ = ["SentinelURL", "is_sentinel_url", "parse_sentinel_url", "sync_client", "async_client",
           "redis_client", "async_redis_client", "celery_transport_options", "redacted_url",
           "sentinel_master"]

SENTINEL_SCHEME = "sentinel"
DEFAULT_SENTINEL_PORT = 26379
# A Sentinel answers SENTINEL MASTERS at once; a long read timeout (the API's, made for blocking
# XREADs) would only delay moving on from a dead Sentinel to the next one.
SENTINEL_QUERY_TIMEOUT = 2.0


@dataclass(frozen=True)
class SentinelURL:
    """A parsed `sentinel://...;sentinel://...` REDIS_URL."""

    sentinels: tuple[tuple[str, int], ...]
    db: int = 0
    username: str | None = None
    password: str | None = None

    def master_kwargs(self) -> dict[str, Any]:
        """What a connection to the master needs from the URL: its db and credentials."""
        kwargs: dict[str, Any] = {"db": self.db}
        if self.username:
            kwargs["username"] = self.username
        if self.password:
            kwargs["password"] = self.password
        return kwargs


def is_sentinel_url(url: str) -> bool:
    return url.startswith(f"{SENTINEL_SCHEME}://")


def parse_sentinel_url(url: str) -> SentinelURL:
    """The Sentinels, db and master credentials of a sentinel REDIS_URL; ValueError says what is wrong."""
    parts = [part for part in url.split(";") if part.strip()]
    if not parts:
        raise ValueError("a sentinel URL names at least one sentinel://host:port")
    sentinels = []
    first: tuple[int, str | None, str | None] | None = None
    for part in parts:
        host, port, db, username, password = _sentinel_part(part.strip())
        sentinels.append((host, port))
        if first is None:
            first = (db, username, password)
        elif (db, username, password) != first and (db, username, password) != (0, None, None):
            # kombu and Celery read them from the first part only: a different one would be ignored.
            raise ValueError("give the db and password in the first sentinel:// part (or the same in each)")
    assert first is not None
    return SentinelURL(sentinels=tuple(sentinels), db=first[0], username=first[1], password=first[2])


def _sentinel_part(part: str) -> tuple[str, int, int, str | None, str | None]:
    """host, port, db, username, password of one `sentinel://` part."""
    split = urlsplit(part)
    if split.scheme != SENTINEL_SCHEME:
        raise ValueError(f"every part of a sentinel list must start with sentinel:// (got {redacted_url(part)!r})")
    try:
        port = split.port or DEFAULT_SENTINEL_PORT
    except ValueError:
        raise ValueError(f"bad port in {redacted_url(part)!r}") from None
    if not split.hostname:
        raise ValueError(f"no host in {redacted_url(part)!r}")
    path = split.path.strip("/")
    if path and not path.isdigit():
        raise ValueError(f"the path of {redacted_url(part)!r} must be a db number")
    username = unquote(split.username) if split.username else None
    password = unquote(split.password) if split.password else None
    return split.hostname, port, int(path or 0), username, password


def redacted_url(url: str) -> str:
    """REDIS_URL with every password replaced by ***, fit for logs and messages."""
    shown = []
    for part in url.split(";"):
        try:
            password = urlsplit(part).password
        except ValueError:
            password = None
        shown.append(part.replace(f":{password}@", ":***@", 1) if password else part)
    return ";".join(shown)


def _sentinel_kwargs(options: dict[str, Any], *, asyncio: bool = False) -> dict[str, Any]:
    """How to ask one Sentinel: short timeouts, and no retries (the next Sentinel is the retry).

    redis-py's default retry (10 tries, backoff up to 1 s) would stall every master lookup for
    seconds behind one dead Sentinel, which is exactly when a lookup matters.
    """
    timeout = min(options.get("socket_connect_timeout") or SENTINEL_QUERY_TIMEOUT, SENTINEL_QUERY_TIMEOUT)
    retry = AsyncRetry(NoBackoff(), 0) if asyncio else Retry(NoBackoff(), 0)
    return {"socket_connect_timeout": timeout, "socket_timeout": timeout, "retry": retry}


class SentinelMasterRedis(redis.Redis):
    """A client of the master its Sentinels name; closing it closes its Sentinel connections too."""

    sentinel_manager: Sentinel | None = None

    def close(self) -> None:
        super().close()
        manager, self.sentinel_manager = self.sentinel_manager, None
        for node in manager.sentinels if manager is not None else []:
            node.close()


class AsyncSentinelMasterRedis(aioredis.Redis):
    """The asyncio twin of SentinelMasterRedis."""

    sentinel_manager: AsyncSentinel | None = None

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        manager, self.sentinel_manager = self.sentinel_manager, None
        for node in manager.sentinels if manager is not None else []:
            await node.aclose()


def sync_client(url: str, *, master_name: str, pool_wait: float | None = None, **options: Any) -> redis.Redis:
    """A redis-py client for REDIS_URL; `options` (timeouts, max_connections, ...) as for `Redis()`.

    `pool_wait`: a command that finds all `max_connections` in use waits this long for one
    (redis-py's BlockingConnectionPool) instead of failing with "Too many connections"; gevent
    workers run far more greenlets than they keep connections. Sentinel pools do not block.
    With Sentinels, each new connection asks them for the master, and a connection that finds a
    demoted master (READONLY) or none drops itself, so the next command reaches the new one.
    """
    if not is_sentinel_url(url):
        if pool_wait is not None:
            return redis.Redis(connection_pool=redis.BlockingConnectionPool.from_url(url, timeout=pool_wait, **options))
        return redis.Redis.from_url(url, **options)
    target = parse_sentinel_url(url)
    manager = Sentinel(list(target.sentinels), sentinel_kwargs=_sentinel_kwargs(options))
    client = manager.master_for(master_name, redis_class=SentinelMasterRedis,
                                **target.master_kwargs(), **options)
    assert isinstance(client, SentinelMasterRedis)
    client.sentinel_manager = manager
    return client


def async_client(url: str, *, master_name: str, **options: Any) -> aioredis.Redis:
    """The asyncio client for REDIS_URL, as `sync_client` makes the sync one."""
    if not is_sentinel_url(url):
        return aioredis.Redis.from_url(url, **options)
    target = parse_sentinel_url(url)
    manager = AsyncSentinel(list(target.sentinels), sentinel_kwargs=_sentinel_kwargs(options, asyncio=True))
    client = manager.master_for(master_name, redis_class=AsyncSentinelMasterRedis,
                                **target.master_kwargs(), **options)
    assert isinstance(client, AsyncSentinelMasterRedis)
    client.sentinel_manager = manager
    return client


def redis_client(settings: Settings, **options: Any) -> redis.Redis:
    """`sync_client` for the settings' REDIS_URL and master name."""
    return sync_client(settings.redis_url, master_name=settings.agent_redis_master_name, **options)


def async_redis_client(settings: Settings, **options: Any) -> aioredis.Redis:
    """`async_client` for the settings' REDIS_URL and master name."""
    return async_client(settings.redis_url, master_name=settings.agent_redis_master_name, **options)


def celery_transport_options(settings: Settings) -> dict[str, Any]:
    """What kombu's broker and Celery's result backend need besides the URL: the master's name."""
    if not is_sentinel_url(settings.redis_url):
        return {}
    return {"master_name": settings.agent_redis_master_name}


def sentinel_master(url: str, *, master_name: str, timeout: float = 1.0) -> tuple[str, int] | None:
    """The master's address as the Sentinels report it now, or None when none can say."""
    target = parse_sentinel_url(url)
    manager = Sentinel(list(target.sentinels), sentinel_kwargs=_sentinel_kwargs({"socket_connect_timeout": timeout}))
    try:
        host, port = manager.discover_master(master_name)
        return str(host), int(port)
    except redis.RedisError:
        return None
    finally:
        for node in manager.sentinels:
            node.close()
