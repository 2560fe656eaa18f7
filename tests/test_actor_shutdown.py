"""What runs when an actor exits, as Ray documents it: on a graceful exit (its last
handle gone, ``exit_actor()``, ``__ray_terminate__``) the instance's
``__ray_shutdown__()`` runs, then the process's ``atexit`` handlers; ``kill`` runs
neither (it ends the process at once)."""

from __future__ import annotations

import atexit
import os
import time
from pathlib import Path

import pytest

import jray as ray

pytestmark = pytest.mark.integration


def _eventually(path: Path, timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    return path.exists()


@ray.remote
class Hooks:
    def __init__(self, folder: str) -> None:
        self.folder = folder
        atexit.register(lambda: Path(folder, "atexit").write_text(str(os.getpid())))

    def __ray_shutdown__(self) -> None:
        Path(self.folder, "shutdown").write_text(str(os.getpid()))

    def pid(self) -> int:
        return os.getpid()

    def leave(self) -> None:
        ray.actor.exit_actor()


def test_hooks_run_when_the_last_handle_goes(cluster: dict[str, object], tmp_path: Path) -> None:
    h = Hooks.remote(str(tmp_path))
    pid = ray.get(h.pid.remote())
    del h
    assert _eventually(tmp_path / "shutdown")
    assert _eventually(tmp_path / "atexit")
    assert (tmp_path / "shutdown").read_text() == str(pid)


def test_hooks_run_on_exit_actor_and_ray_terminate(cluster: dict[str, object],
                                                    tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    h = Hooks.remote(str(a))
    with pytest.raises(ray.exceptions.ActorDiedError, match="exit_actor"):
        ray.get(h.leave.remote())
    assert _eventually(a / "shutdown") and _eventually(a / "atexit")
    g = Hooks.remote(str(b))
    ray.get(g.pid.remote())
    g.__ray_terminate__.remote()
    assert _eventually(b / "shutdown") and _eventually(b / "atexit")


def test_kill_runs_no_hooks(cluster: dict[str, object], tmp_path: Path) -> None:
    h = Hooks.remote(str(tmp_path))
    pid = ray.get(h.pid.remote())
    ray.kill(h)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    time.sleep(0.3)
    assert not (tmp_path / "shutdown").exists()
    assert not (tmp_path / "atexit").exists()


def test_exit_actor_outside_an_actor_is_a_type_error(cluster: dict[str, object]) -> None:
    with pytest.raises(TypeError, match="outside an actor"):
        ray.actor.exit_actor()

    @ray.remote
    def in_a_task() -> str:
        try:
            ray.actor.exit_actor()
        except TypeError as exc:
            return str(exc)
        return "no error"

    assert "outside an actor" in ray.get(in_a_task.remote())


def test_object_id_is_rays_old_name_of_object_ref() -> None:
    assert ray.ObjectID is ray.ObjectRef
