"""The ``jray`` command line, run as a real process."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from jray.testing import jray_processes

pytestmark = pytest.mark.integration
ROOT = Path(__file__).parent.parent
JRAY = [sys.executable, "-m", "jray.cli"]


def test_demo_runs_a_dag_and_cleans_up() -> None:
    out = subprocess.run([*JRAY, "demo", "--num-cpus", "2"], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    assert "result 167480 (expected 167480)" in out
    assert not jray_processes()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_lab_serves_the_notebooks_folder(tmp_path: Path) -> None:
    port, token = _free_port(), "jray-cli-test"
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(tmp_path / "config"),
           "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
           "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "workspaces")}
    proc = subprocess.Popen(
        [*JRAY, "lab", str(ROOT / "notebooks"), "--no-browser", f"--ServerApp.port={port}",
         "--ServerApp.port_retries=0", "--ServerApp.ip=127.0.0.1",
         f"--IdentityProvider.token={token}"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        url = f"http://127.0.0.1:{port}/api/contents?token={token}"
        listing = None
        deadline = time.monotonic() + 60
        while listing is None and time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(url, timeout=5) as reply:
                    listing = json.load(reply)
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.2)
        assert listing is not None, "JupyterLab did not answer within 60 s"
        names = {item["name"] for item in listing["content"]}
        assert "01-quickstart.ipynb" in names and "07-evolution-strategies.ipynb" in names
        with pytest.raises(urllib.error.HTTPError) as denied:  # the token is required
            urllib.request.urlopen(url.split("?")[0], timeout=5)
        assert denied.value.code == 403
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        if proc.stderr:
            proc.stderr.close()


def test_lab_names_a_missing_directory(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    done = subprocess.run([*JRAY, "lab", str(missing)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2 and str(missing) in done.stderr


def test_unknown_options_are_named() -> None:
    done = subprocess.run([*JRAY, "demo", "--frob", "2"], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2 and "--frob" in done.stderr
