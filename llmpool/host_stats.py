"""What a worker's heartbeat tells about its processes and its host: psutil's figures, and the
NVIDIA GPUs' memory and utilisation through NVML where there are any.

NVML (`nvidia-ml-py`, the extra `llmpool[gpu]`) is optional: no library, no driver or no GPU is
the normal case on most hosts. It gives an empty GPU list and one DEBUG line, never an error.
"""

from __future__ import annotations

import importlib
import logging
import os
import threading
from typing import Any

import psutil

__all__ = ["ProcessSampler", "host_figures", "GpuSampler"]

log = logging.getLogger(__name__)


class ProcessSampler:
    """CPU and memory of one process and its children (a prefork worker's pool), sampled repeatedly.

    psutil measures CPU between two calls on the same Process object, so the objects are kept:
    the first sample of a process says 0% and every later one the share since the sample before.
    """

    def __init__(self, pid: int | None = None) -> None:
        self.root = psutil.Process(pid or os.getpid())
        self._known: dict[int, psutil.Process] = {}

    def sample(self) -> dict[str, Any]:
        try:
            procs = [self.root, *self.root.children(recursive=True)]
        except psutil.Error:
            procs = [self.root]
        self._known = {p.pid: self._known.get(p.pid, p) for p in procs}
        cpu, rss, threads = 0.0, 0, 0
        for proc in self._known.values():
            try:
                with proc.oneshot():
                    cpu += proc.cpu_percent(interval=None)
                    rss += proc.memory_info().rss
                    threads += proc.num_threads()
            except psutil.Error:  # a child that just exited
                continue
        return {"cpu_percent": round(cpu, 1), "rss_bytes": rss, "processes": len(self._known), "threads": threads}


def host_figures() -> dict[str, Any]:
    """The machine: CPU use since the last call, memory, and the load average."""
    memory = psutil.virtual_memory()
    load_1, load_5, load_15 = psutil.getloadavg()
    return {
        "cpu_percent": psutil.cpu_percent(interval=None), "cpu_count": psutil.cpu_count() or 0,
        "memory_total_bytes": memory.total, "memory_available_bytes": memory.available,
        "memory_percent": memory.percent,
        "load_1m": round(load_1, 2), "load_5m": round(load_5, 2), "load_15m": round(load_15, 2),
    }


class GpuSampler:
    """Memory and utilisation of every NVIDIA GPU through NVML; [] when there is no NVML or GPU."""

    def __init__(self, module: str = "pynvml") -> None:
        self._module_name = module
        self._nvml: Any = None
        self._tried = False
        self._lock = threading.Lock()

    def _open(self) -> Any:
        with self._lock:
            if not self._tried:
                self._tried = True
                try:
                    nvml = importlib.import_module(self._module_name)
                    nvml.nvmlInit()
                    self._nvml = nvml
                except Exception as exc:  # ImportError, NVMLError (no driver): a host without GPUs
                    log.debug("no GPU figures on this host (%s: %s)", type(exc).__name__, exc)
            return self._nvml

    def sample(self) -> list[dict[str, Any]]:
        nvml = self._open()
        if nvml is None:
            return []
        try:
            return [self._device(nvml, i) for i in range(nvml.nvmlDeviceGetCount())]
        except Exception as exc:  # a GPU that fell off the bus: report none this time
            log.debug("GPU figures unreadable: %s", exc)
            return []

    @staticmethod
    def _device(nvml: Any, index: int) -> dict[str, Any]:
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
        name = nvml.nvmlDeviceGetName(handle)
        memory = nvml.nvmlDeviceGetMemoryInfo(handle)
        rates = nvml.nvmlDeviceGetUtilizationRates(handle)
        return {"index": index, "name": name.decode() if isinstance(name, bytes) else str(name),
                "memory_total_bytes": int(memory.total), "memory_used_bytes": int(memory.used),
                "utilization_percent": int(rates.gpu), "memory_utilization_percent": int(rates.memory)}

    def close(self) -> None:
        with self._lock:
            if self._nvml is not None:
                try:
                    self._nvml.nvmlShutdown()
                except Exception:  # shutting down: nothing to do about it
                    pass
                self._nvml = None
