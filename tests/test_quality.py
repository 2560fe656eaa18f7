"""House rules checked like tests: lint, types, and module size."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *cmd], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)


@pytest.mark.timeout(600)
def test_ruff_is_clean() -> None:
    proc = _run("ruff", "check", "jray", "tests", "benchmarks")
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.timeout(600)
def test_mypy_strict_is_clean() -> None:
    proc = _run("mypy")  # configuration (strict, files) lives in pyproject.toml
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_modules_stay_small() -> None:
    big = {
        str(p.relative_to(ROOT)): n
        for p in (ROOT / "jray").rglob("*.py")
        if (n := len(p.read_text().splitlines())) > 600
    }
    assert not big, f"modules over 600 lines; split them by concern: {big}"
