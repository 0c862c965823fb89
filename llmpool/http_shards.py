"""One HTTP client over several small connection pools, so a pool's upkeep stays cheap at 10,000 calls.

httpcore's ConnectionPool re-examines every connection it holds on each request and each response
close (`_assign_requests_to_connections`: closed? expired? idle? and, per idle connection, a count
of all idle ones), so its cost per call grows with the pool and quadratically once connections sit
idle. At a few dozen connections that is nothing; a gevent worker with 10,000 calls in flight spent
more CPU there than on the calls. `ShardedTransport` spreads the calls over pools of at most
SHARD_SIZE connections, each call going to the shard with the fewest calls in flight: the same
total of connections, each request's upkeep bounded by its shard's size.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import httpx

__all__ = ["SHARD_SIZE", "ShardedTransport", "shard_sizes"]

SHARD_SIZE = 64  # connections per pool: the default 64-thread worker keeps one pool


def shard_sizes(max_connections: int) -> list[int]:
    """Pool sizes that add up to `max_connections`, none above SHARD_SIZE, as even as can be."""
    shards = max(1, -(-max_connections // SHARD_SIZE))
    size, extra = divmod(max_connections, shards)
    return [size + (1 if n < extra else 0) for n in range(shards)]


class _Released(httpx.SyncByteStream):
    """A response body that tells its shard once, when closed, that the call is over."""

    def __init__(self, inner: httpx.SyncByteStream, release: Callable[[], None]) -> None:
        self._inner = inner
        self._release: Callable[[], None] | None = release

    def __iter__(self) -> Iterator[bytes]:
        yield from self._inner

    def close(self) -> None:
        try:
            self._inner.close()
        finally:
            release, self._release = self._release, None
            if release is not None:
                release()


class ShardedTransport(httpx.BaseTransport):
    """Sends each request through the shard with the fewest calls in flight."""

    def __init__(self, shards: list[httpx.BaseTransport]) -> None:
        self._shards = shards
        self._active = [0] * len(shards)
        self._lock = threading.Lock()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        with self._lock:
            index = min(range(len(self._active)), key=self._active.__getitem__)
            self._active[index] += 1
        try:
            response = self._shards[index].handle_request(request)
        except BaseException:
            self._release(index)
            raise
        assert isinstance(response.stream, httpx.SyncByteStream)
        response.stream = _Released(response.stream, lambda: self._release(index))
        return response

    def _release(self, index: int) -> None:
        with self._lock:
            self._active[index] -= 1

    def in_flight(self) -> list[int]:
        """Calls in flight per shard (for tests and figures)."""
        with self._lock:
            return list(self._active)

    def close(self) -> None:
        for shard in self._shards:
            shard.close()
