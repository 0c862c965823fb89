"""Worker and host figures: psutil's, NVML's when a GPU is there (a fake NVML here), none and no
error without; heartbeats in Redis, grouped per host, and the table `llmpool status` prints.
A real worker's: tests/integration/test_worker_heartbeats.py."""

from __future__ import annotations

import logging
import os
import sys
import types
from typing import Any

import fakeredis
import psutil
import pytest

from llmpool.heartbeats import ALIVE_FOR, WorkerHeartbeats, by_host
from llmpool.host_stats import GpuSampler, ProcessSampler, host_figures
from llmpool.hosts_view import render_hosts
from llmpool.keys import Keys

GIB = 1024 ** 3


def test_a_process_sample_covers_its_children(monkeypatch: pytest.MonkeyPatch):
    sampler = ProcessSampler()
    other = psutil.Process(os.getppid())  # stands in for a prefork pool child (no process starts here)
    monkeypatch.setattr(sampler.root, "children", lambda recursive=False: [other])
    sampler.sample()
    sample = sampler.sample()
    own = psutil.Process(os.getpid()).memory_info().rss
    assert sample["processes"] == 2 and sample["rss_bytes"] > own and sample["threads"] >= 2
    assert sample["cpu_percent"] >= 0


def test_host_figures_are_the_machines():
    figures = host_figures()
    assert figures["memory_total_bytes"] == psutil.virtual_memory().total
    assert figures["cpu_count"] == psutil.cpu_count()
    assert 0 <= figures["memory_percent"] <= 100 and figures["load_1m"] >= 0


class FakeNVML(types.ModuleType):
    """pynvml's calls, for two GPUs (names as bytes, as older bindings return them, and as str)."""

    class NVMLError(Exception):
        pass

    def __init__(self, *, fail_init: bool = False) -> None:
        super().__init__("fake_pynvml")
        self.fail_init = fail_init
        self.shut = False

    def nvmlInit(self) -> None:  # noqa: N802 - NVML's names
        if self.fail_init:
            raise self.NVMLError("NVML Shared Library Not Found")

    def nvmlDeviceGetCount(self) -> int:  # noqa: N802
        return 2

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:  # noqa: N802
        return index

    def nvmlDeviceGetName(self, handle: int) -> Any:  # noqa: N802
        return b"Tesla T4" if handle == 0 else "NVIDIA A100"

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> Any:  # noqa: N802
        return types.SimpleNamespace(total=16 * GIB, used=(handle + 1) * GIB, free=0)

    def nvmlDeviceGetUtilizationRates(self, handle: int) -> Any:  # noqa: N802
        return types.SimpleNamespace(gpu=40 + handle, memory=10)

    def nvmlShutdown(self) -> None:  # noqa: N802
        self.shut = True


def test_gpus_through_nvml(monkeypatch: pytest.MonkeyPatch):
    fake = FakeNVML()
    monkeypatch.setitem(sys.modules, "fake_pynvml", fake)
    sampler = GpuSampler("fake_pynvml")
    assert sampler.sample() == [
        {"index": 0, "name": "Tesla T4", "memory_total_bytes": 16 * GIB, "memory_used_bytes": GIB,
         "utilization_percent": 40, "memory_utilization_percent": 10},
        {"index": 1, "name": "NVIDIA A100", "memory_total_bytes": 16 * GIB, "memory_used_bytes": 2 * GIB,
         "utilization_percent": 41, "memory_utilization_percent": 10}]
    sampler.close()
    assert fake.shut


@pytest.mark.parametrize("case", ["no library", "no driver"])
def test_no_nvml_is_normal_no_gpus_and_no_warning(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
                                                  case: str):
    if case == "no driver":
        monkeypatch.setitem(sys.modules, "fake_pynvml", FakeNVML(fail_init=True))
    sampler = GpuSampler("fake_pynvml" if case == "no driver" else "no_such_nvml_module")
    with caplog.at_level(logging.DEBUG):
        assert sampler.sample() == [] and sampler.sample() == []
    assert [r.levelno for r in caplog.records if r.name == "llmpool.host_stats"] == [logging.DEBUG]  # once


def _beat(heartbeats: WorkerHeartbeats, node: str, host: str, *, now: float, in_flight: int = 0) -> None:
    heartbeats.beat(node, now=now, stats={
        "host": host, "pool": "threads", "concurrency": 8, "pid": 10, "in_flight_jobs": in_flight,
        "process": {"cpu_percent": 12.5, "rss_bytes": 100 * 2**20, "processes": 1, "threads": 9},
        "host_stats": {"cpu_percent": 30.0, "cpu_count": 4, "memory_total_bytes": 8 * GIB, "memory_percent": 50.0,
                       "load_1m": 1.0, "load_5m": 0.5, "load_15m": 0.25, "at": now},
        "gpus": [{"index": 0, "name": "T4", "memory_total_bytes": 16 * GIB, "memory_used_bytes": GIB,
                  "utilization_percent": 7, "memory_utilization_percent": 1}] if host == "gpu-box" else []})


def test_heartbeats_live_alive_for_and_group_by_host(clock: Any):
    fake = fakeredis.FakeRedis()
    keys = Keys()
    heartbeats = WorkerHeartbeats(fake, keys)
    _beat(heartbeats, "w1@cpu-box", "cpu-box", now=clock.now, in_flight=3)
    _beat(heartbeats, "control@cpu-box", "cpu-box", now=clock.now)
    _beat(heartbeats, "w1@gpu-box", "gpu-box", now=clock.now)
    heartbeats.forget("control@cpu-box")  # a clean stop leaves at once
    pipe = fake.pipeline()
    heartbeats.alive_names(pipe, since=clock.now - ALIVE_FOR)
    hosts = by_host(heartbeats.figures(pipe.execute()[0]))
    assert {name: [w["node"] for w in entry["workers"]] for name, entry in hosts.items()} == {
        "cpu-box": ["w1@cpu-box"], "gpu-box": ["w1@gpu-box"]}
    assert hosts["gpu-box"]["gpus"][0]["name"] == "T4" and hosts["cpu-box"]["host"]["cpu_count"] == 4
    assert "host_stats" not in hosts["cpu-box"]["workers"][0]  # host figures once per host
    assert 0 < fake.pttl(keys.worker_stats("w1@cpu-box")) <= ALIVE_FOR * 1000  # a killed worker's figures expire
    table = render_hosts(hosts)
    assert "host cpu-box: cpu 30% of 4  mem 50% of 8.0 GiB  load 1.00 0.50 0.25" in table
    assert "gpu0 T4: 7% busy, 1.0/16.0 GiB" in table
    assert any(line.split()[:5] == ["w1@cpu-box", "threads/8", "3", "12%", "100"] for line in table.splitlines())
    fake.close()


def test_a_worker_without_figures_is_still_listed():
    assert by_host([{"node": "old@box"}]) == {"box": {"host": None, "gpus": [], "workers": [{"node": "old@box"}]}}
    assert render_hosts({}) == "no live workers"
    assert "host box: no figures yet" in render_hosts(by_host([{"node": "old@box"}]))
