"""REDIS_URL=sentinel://... on real Sentinels (a primary, a replica, three Sentinels): the clients
reach the master they name and follow a failover, the CLI and `llmpool up` read through them, and
the API and a worker serve a chat, a refresh (a Celery result) and a broadcast over them.

The failover under load, with every job counted: tests/chaos/test_sentinel_failover.py.
"""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

import llmpool.dev.stack as stack
from llmpool.dev.mock_llm import ContainerSpec, MockLLM
from llmpool.dev.redis_server import free_port
from llmpool.dev.stack.supervisor import StackAborted, Supervisor
from llmpool.redis_conn import async_client, sync_client
from llmpool.settings import load_settings
from tests.conftest import require_redis_binary
from tests.processes import clean_env, start_api, start_worker, wait_for
from tests.sentinel import MASTER_NAME, SentinelCluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelCluster]:
    require_redis_binary()
    with SentinelCluster(tmp_path_factory.mktemp("sentinel")) as running:
        yield running


def direct(port: int) -> redis.Redis:
    return redis.Redis(port=port, socket_timeout=2, decode_responses=True)


def test_the_sync_and_asyncio_clients_write_to_the_master_the_sentinels_name(cluster: SentinelCluster) -> None:
    client = sync_client(cluster.url, master_name=MASTER_NAME, socket_timeout=5, socket_connect_timeout=2)
    try:
        client.set("sentinel:sync", "1")
    finally:
        client.close()

    async def write() -> None:
        aclient = async_client(cluster.url, master_name=MASTER_NAME, socket_timeout=5, socket_connect_timeout=2)
        try:
            await aclient.set("sentinel:async", "1")
        finally:
            await aclient.aclose()

    asyncio.run(write())
    assert cluster.master_port() == cluster.primary.port
    assert direct(cluster.primary.port).mget("sentinel:sync", "sentinel:async") == ["1", "1"]


def llmpool_cli(*args: str, **env: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "llmpool.cli", *args], env=clean_env(**env),
                          capture_output=True, text=True, timeout=60)


def test_the_cli_reads_through_the_sentinels(cluster: SentinelCluster) -> None:
    env = {"redis_url": cluster.url, "agent_redis_master_name": MASTER_NAME}
    status = llmpool_cli("status", "--json", **env)
    assert status.returncode == 0 and json.loads(status.stdout) == [], status.stderr
    assert llmpool_cli("check-config", **env).returncode == 0
    show = llmpool_cli("jobs", "show", "no-such-job", **env)
    assert (show.returncode, show.stderr.strip()) == (1, "llmpool: no job with id no-such-job")
    wrong = llmpool_cli("status", redis_url=f"sentinel://:hunter2@127.0.0.1:{cluster.sentinels[0].port}",
                        agent_redis_master_name="nosuchmaster")
    assert wrong.returncode == 1 and "cannot read the registry" in wrong.stderr
    assert "nosuchmaster" in wrong.stderr and "hunter2" not in wrong.stderr + wrong.stdout


def test_llmpool_up_starts_no_redis_and_uses_the_master_the_sentinels_name(
        cluster: SentinelCluster, tmp_path: Path) -> None:
    supervisor = Supervisor(out=io.StringIO())
    settings = load_settings(redis_url=cluster.url, agent_redis_master_name=MASTER_NAME)
    described = stack._ensure_redis(supervisor, settings, data_dir=tmp_path, env={})
    assert described == f"{cluster.url} (master {MASTER_NAME!r} at 127.0.0.1:{cluster.primary.port}, via Sentinels)"
    assert supervisor.children == [] and not (tmp_path / "redis").exists()


def test_llmpool_up_names_what_is_missing_when_no_sentinel_knows_the_master(
        cluster: SentinelCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stack, "SENTINEL_WAIT", 1.0)
    supervisor = Supervisor(out=io.StringIO())
    settings = load_settings(redis_url=f"{cluster.url};sentinel://127.0.0.1:{free_port()}",
                             agent_redis_master_name="other")
    with pytest.raises(StackAborted, match="names a live master 'other' \\(AGENT_REDIS_MASTER_NAME\\)"):
        stack._ensure_redis(supervisor, settings, data_dir=tmp_path, env={})
    assert supervisor.children == []


@pytest.mark.timeout(120)
def test_a_worker_and_the_api_serve_chats_refreshes_and_broadcasts_over_sentinels(
        cluster: SentinelCluster, tmp_path: Path) -> None:
    spec = ContainerSpec(name="llm", ttft=0.01, tokens_per_second=400)
    with MockLLM(containers=[spec]) as mock:
        env = clean_env(
            redis_url=cluster.url, agent_redis_master_name=MASTER_NAME, local_llm_host="127.0.0.1",
            local_llm_port=mock.port("llm"), agent_backend_url=f"http://127.0.0.1:{free_port()}",
            agent_connect_timeout=2, agent_first_token_timeout=5, agent_request_timeout=10,
        )
        worker = start_worker(tmp_path, env, concurrency=4)
        api = None
        try:
            api, url = start_api(tmp_path, env)
            chat = httpx.post(url + "/poll_requests", json={"message": "hi"}, timeout=30,
                              headers={"Accept": "application/json"})
            assert chat.status_code == 200 and chat.json()["status"] == "succeeded", chat.text
            refresh = httpx.post(url + "/refresh", timeout=60)  # waits on a Celery result: SentinelBackend
            assert refresh.status_code == 200, refresh.text
            reload = httpx.post(url + "/refresh_config", timeout=30)  # a Celery broadcast: pub/sub
            assert reload.status_code == 200 and reload.json()["workers_reloaded"] >= 1, reload.text
            # All of it landed on the master the Sentinels name.
            job = direct(cluster.primary.port).exists(f"llmpool:job:{chat.json()['job_id']}")
            assert job == 1
        finally:
            if api is not None:
                api.stop()
            worker.stop()


def test_the_clients_follow_a_failover(tmp_path: Path) -> None:
    """Last in this module by its own cluster: the primary is killed, the replica takes over."""
    require_redis_binary()
    with SentinelCluster(tmp_path) as own:
        client = sync_client(own.url, master_name=MASTER_NAME, socket_timeout=2, socket_connect_timeout=1)
        client.set("before", "1")
        own.kill_primary()
        own.wait_promoted(timeout=30)

        def writes() -> bool:
            try:
                return bool(client.set("after", "sync"))
            except redis.ConnectionError:  # the pool's connection to the dead primary, dropped now
                return False

        wait_for(writes, timeout=10, what="a sync write on the new master", interval=0.1)

        async def async_write() -> None:
            aclient = async_client(own.url, master_name=MASTER_NAME, socket_timeout=2, socket_connect_timeout=1)
            try:
                await aclient.set("after-async", "1")
            finally:
                await aclient.aclose()

        asyncio.run(async_write())
        client.close()
        promoted = direct(own.replica.port)
        assert promoted.mget("before", "after", "after-async") == ["1", "sync", "1"]
