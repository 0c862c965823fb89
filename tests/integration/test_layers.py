"""The package layers hold (`lint-imports`), and a broken one is caught: the contracts can fail."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.processes import ROOT

PACKAGES = ("llmpool", "workers", "beat", "api")
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint(cwd: Path) -> subprocess.CompletedProcess[str]:
    # PYTHONPATH first, so grimp reads the packages under `cwd`, not the installed ones.
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=cwd, capture_output=True, text=True,
                          timeout=120, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(cwd)})


def _copy(tmp: Path) -> Path:
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp / "pyproject.toml")
    return tmp


def test_the_repository_keeps_every_contract() -> None:
    result = _lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(("module", "line", "contract"), [
    ("llmpool/keys.py", "import llmpool.dev.redis_server", "Production code never imports the dev tools"),
    ("llmpool/jobs.py", "import workers.request", "Layers: api | workers over beat"),
    ("beat/tasks.py", "import workers.chat_task", "Layers: api | workers over beat"),
    ("llmpool/registry.py", "import fastapi", "The core imports no web framework"),
    ("llmpool/runner.py", "import celery", "Only llmpool.client publishes through Celery"),
    ("api/app.py", "import workers.chat_task", "Layers: api | workers over beat"),
])
def test_a_forbidden_import_breaks_its_contract(tmp_path: Path, module: str, line: str, contract: str) -> None:
    tree = _copy(tmp_path)
    path = tree / module
    path.write_text(path.read_text() + f"\n{line}  # noqa\n")
    result = _lint(tree)
    assert result.returncode != 0
    broken = [text for text in result.stdout.splitlines() if " BROKEN" in text]
    assert len(broken) == 1 and contract in broken[0], result.stdout


def test_importing_the_api_builds_no_worker() -> None:
    """The API is a producer: importing it loads neither the chat task nor the worker signals."""
    code = ("import sys, api.app; "
            "print(sorted(m for m in sys.modules if m.startswith(('workers', 'beat', 'llmpool.dev'))))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                            env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_the_public_face_is_one_import() -> None:
    import llmpool

    for name in ("Client", "ChatJob", "ChatResult", "LLMPoolError", "AllEndpointsFailed", "JobExpired"):
        assert getattr(llmpool, name).__name__ == name
