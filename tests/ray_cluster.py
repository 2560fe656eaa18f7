"""A real local Ray cluster for the Ray backend's tests: ``ray start --head``, stopped after.

Started in a temporary directory of its own, so stopping it ends exactly its
processes (its daemons, found by that directory in their command lines, and all
their descendants) and not another Ray on the machine, which a plain
``ray stop`` would also kill. Every wait is bounded.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil

from jray.testing import living

START_TIMEOUT_S = 120
STOP_TIMEOUT_S = 20


def ray_missing() -> str | None:
    """Why the Ray backend cannot be tested here (None when it can)."""
    try:
        import ray  # noqa: F401
    except ImportError:
        return "Ray is not installed (pip install 'jray[ray]')"
    if shutil.which("ray", path=str(Path(sys.executable).parent)) is None:
        return "the ray command is not installed next to this Python"
    return None


def ray_views_missing() -> str | None:
    """Why Ray's live views cannot be tested here: Ray, or its dashboard (ray[default])."""
    why = ray_missing()
    if why is None:
        try:
            import aiohttp  # noqa: F401
            import ray.dashboard.modules.state  # noqa: F401  (the state API's server side)
        except ImportError:
            why = "Ray's dashboard is not installed (pip install 'ray[default]')"
    return why


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def processes(temp_dir: str) -> list[psutil.Process]:
    """The cluster's processes: those naming ``temp_dir``, and their descendants."""
    found: dict[int, psutil.Process] = {}
    for p in psutil.process_iter(["cmdline"]):
        try:
            if any(temp_dir in part for part in p.info["cmdline"] or ()):
                found[p.pid] = p
                for c in p.children(recursive=True):
                    found[c.pid] = c
        except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
            pass
    return list(found.values())


def stop(temp_dir: str) -> list[psutil.Process]:
    """End the cluster's processes (SIGTERM, then SIGKILL); those still alive after."""
    procs = processes(temp_dir)
    for sig in ("terminate", "kill"):
        for p in living(procs):
            try:
                getattr(p, sig)()
            except psutil.NoSuchProcess:
                pass
        deadline = time.monotonic() + STOP_TIMEOUT_S / 2
        while living(procs) and time.monotonic() < deadline:
            time.sleep(0.1)
        procs = list({p.pid: p for p in living(procs) + processes(temp_dir)}.values())
    return living(procs)


@contextmanager
def ray_head(num_cpus: int = 2, dashboard: bool = False,
             token: bool = False) -> Iterator[tuple[str, str]]:
    """A Ray head node on a free port; yields its address and temporary directory.
    ``dashboard``: with Ray's dashboard (its API server answers the state API the
    live views read; on free ports). ``token``: with token authentication, as Ray
    defaults to for clusters ``ray.init`` starts: a token of its own in the temporary
    directory, and ``RAY_AUTH_MODE``/``RAY_AUTH_TOKEN_PATH`` set in this process's
    environment while the block runs, so the drivers and kernels started in it
    find the token (``ray start`` never makes one). No process or file of it
    outlives the block."""
    temp_dir = tempfile.mkdtemp(prefix="jrt-", dir="/tmp")
    port = _free_port()
    ray_cmd = str(Path(sys.executable).parent / "ray")
    saved = {k: os.environ.get(k) for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH")
             } if token else {}
    if token:
        path = Path(temp_dir) / "auth_token"
        path.write_text(secrets.token_hex(32))
        path.chmod(0o600)
        os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(path))
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    views = ["--include-dashboard=true", f"--dashboard-port={_free_port()}",
             f"--dashboard-agent-listen-port={_free_port()}"] if dashboard else [
             "--include-dashboard=false"]
    try:
        proc = subprocess.run([ray_cmd, "start", "--head", f"--num-cpus={num_cpus}", *views,
                               f"--port={port}", f"--temp-dir={temp_dir}",
                               "--disable-usage-stats"],
                              env=env, capture_output=True, text=True, timeout=START_TIMEOUT_S)
        if proc.returncode != 0:  # say why: Ray's own output names it
            raise AssertionError(f"ray start --head failed ({proc.returncode}):\n"
                                 f"{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
        yield f"127.0.0.1:{port}", temp_dir
    finally:
        left = stop(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        assert not left, f"Ray processes outlived the test cluster: " \
                         f"{[p.pid for p in left]}"
