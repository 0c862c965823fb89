"""Headless Chromium on `llmpool up`: Flower's task pages (through its basic auth) and the API's /status.

What the browser rendered is checked (its DOM: the chat by its summary and SUCCESS, never its text;
the live worker in /status), and the screenshots are taken at a fixed window size. They are the
README's pictures: LLMPOOL_UPDATE_SCREENSHOTS=1 writes them to docs/screenshots/.
Chromium is Debian's `chromium` (.ci/run installs it); without it this skips, except under CI.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from llmpool.dev.redis_server import free_port
from tests.conftest import IN_CI, require_redis_binary
from tests.integration.test_devstack import OWN_NAMES, OWN_PREFIXES, Up
from tests.processes import ROOT, wait_for

WINDOW = (1280, 800)
USER, PASSWORD = "ops", "screenshot-pw"
TEXT = "Hello from the screenshot test"
DOCS = ROOT / "docs" / "screenshots"
CHROMIUM_SECONDS = 60  # one page load, rendered and its scripts run, at most


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if IN_CI:
            pytest.fail("chromium is missing under CI (.ci/run installs it)")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return found


def browse(url: str, *, profile: Path, screenshot: Path | None = None) -> str:
    """The DOM Chromium rendered for `url` (scripts run for up to 3 s of virtual time); with
    `screenshot`, also a PNG of the window. `profile`: the browser's own directory (the test's)."""
    base = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--mute-audio",
            f"--window-size={WINDOW[0]},{WINDOW[1]}", "--virtual-time-budget=3000", f"--user-data-dir={profile}"]
    if screenshot is not None:
        subprocess.run([*base, f"--screenshot={screenshot}", url], capture_output=True, timeout=CHROMIUM_SECONDS,
                       check=True)
    dom = subprocess.run([*base, "--dump-dom", url], capture_output=True, text=True, timeout=CHROMIUM_SECONDS,
                         check=True)
    return dom.stdout


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", path
    width, height = struct.unpack(">II", data[16:24])
    return width, height


@pytest.fixture
def up(tmp_path: Path) -> Iterator[tuple[Up, dict[str, str]]]:
    chromium()
    require_redis_binary()
    env = {k: v for k, v in os.environ.items() if not k.startswith(OWN_PREFIXES) and k not in OWN_NAMES}
    env.update({
        "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0", "AGENT_API_PORT": str(free_port()),
        "AGENT_FLOWER_PORT": str(free_port()), "LOCAL_LLM_PORT": str(free_port()),
        "AGENT_DATA_DIR": str(tmp_path / "data"), "AGENT_BACKEND_URL": f"http://127.0.0.1:{free_port()}",
        "AGENT_WORKER_CONCURRENCY": "4", "AGENT_FLOWER_BASIC_AUTH": f"{USER}:{PASSWORD}",
    })
    stack = Up(tmp_path, env)
    try:
        yield stack, env
    finally:
        stack.kill_tree()


@pytest.mark.timeout(180)
def test_chromium_shows_flowers_task_page_and_the_apis_status(up: tuple[Up, dict[str, str]], tmp_path: Path):
    stack, env = up
    stack.wait_ready()
    api = f"http://127.0.0.1:{env['AGENT_API_PORT']}"
    flower = f"http://127.0.0.1:{env['AGENT_FLOWER_PORT']}"
    answer = httpx.post(f"{api}/poll_requests", json={"message": TEXT}, headers={"Accept": "application/json"},
                        timeout=30).json()
    job_id = answer["job_id"]
    wait_for(lambda: httpx.get(f"{flower}/api/task/info/{job_id}", auth=(USER, PASSWORD), timeout=5).json()
             .get("state") == "SUCCESS", timeout=30, what="Flower to see the chat succeed", interval=0.5)
    authed = flower.replace("http://", f"http://{USER}:{PASSWORD}@")
    shots = {"flower-task.png": f"{authed}/task/{job_id}", "flower-tasks.png": f"{authed}/tasks",
             "api-status.png": f"{api}/status"}
    profile = tmp_path / "chromium"
    doms = {name: browse(url, profile=profile, screenshot=tmp_path / name) for name, url in shots.items()}

    task, tasks, status = doms["flower-task.png"], doms["flower-tasks.png"], doms["api-status.png"]
    assert job_id in task and "SUCCESS" in task and "&lt;chat job: 1 messages, priority=default&gt;" in task
    assert job_id in tasks and "llmpool.chat" in tasks  # the list, filled by its scripts through the auth
    assert TEXT not in task + tasks
    assert '"status":"ready"' in status and '"hosts":' in status and "worker1@" in status
    anonymous = browse(f"{flower}/task/{job_id}", profile=tmp_path / "anonymous")
    assert job_id not in anonymous  # no credentials: nothing of the task shows
    for name in shots:
        assert png_size(tmp_path / name) == WINDOW, name
    if os.environ.get("LLMPOOL_UPDATE_SCREENSHOTS") == "1":
        DOCS.mkdir(parents=True, exist_ok=True)
        for name in shots:
            shutil.copyfile(tmp_path / name, DOCS / name)
