"""``jray.get_runtime_context()`` in the driver, a task, and sync and async actors."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

import jray
from jray.testing import eventually

pytestmark = pytest.mark.integration


def _ids() -> dict[str, Any]:
    ctx = jray.get_runtime_context()
    return {"job": ctx.get_job_id(), "node": ctx.get_node_id(), "task": ctx.get_task_id(),
            "actor": ctx.get_actor_id(), "restarted": ctx.was_current_actor_reconstructed}


@jray.remote
def task_ids() -> dict[str, Any]:
    return _ids()


@jray.remote
class Probe:
    def __init__(self) -> None:
        self.at_init = _ids()

    def ids(self) -> dict[str, Any]:
        return _ids()

    def init_ids(self) -> dict[str, Any]:
        return self.at_init

    def whoami(self) -> str:
        return "probe"

    def self_handle(self) -> Any:
        return jray.get_runtime_context().current_actor


@jray.remote
class AsyncProbe:
    async def ids(self, pause: float) -> tuple[str | None, str | None]:
        before = jray.get_runtime_context().get_task_id()
        await asyncio.sleep(pause)  # other calls run meanwhile
        return before, jray.get_runtime_context().get_task_id()


def test_get_runtime_context_starts_jray() -> None:
    assert not jray.is_initialized()
    try:
        ctx = jray.get_runtime_context()
        assert jray.is_initialized()
        assert ctx.get_task_id() is None and ctx.get_node_id()
    finally:
        jray.shutdown()  # (first in this file: before the module's cluster starts)


def test_driver_and_task(cluster: dict[str, object]) -> None:
    driver = _ids()
    assert driver["task"] is None and driver["actor"] is None and not driver["restarted"]
    assert driver["node"] == cluster["node_id"]
    assert isinstance(driver["job"], str) and len(driver["job"]) == 8
    a, b = jray.get([task_ids.remote(), task_ids.remote()], timeout=30)
    for t in (a, b):
        assert (t["job"], t["node"], t["actor"]) == (driver["job"], driver["node"], None)
        assert isinstance(t["task"], str) and t["task"]
    assert a["task"] != b["task"]


def test_sync_actor(cluster: dict[str, object]) -> None:
    p = Probe.options(max_restarts=1).remote()
    first, second = jray.get([p.ids.remote(), p.ids.remote()], timeout=30)
    at_init = jray.get(p.init_ids.remote(), timeout=30)
    actor_id = p._actor_id.hex()
    assert first["actor"] == second["actor"] == at_init["actor"] == actor_id
    assert first["task"] and second["task"] and first["task"] != second["task"]
    assert first["job"] == _ids()["job"] and not first["restarted"]
    pid = jray.get(p.__ray_call__.remote(lambda self: __import__("os").getpid()), timeout=30)
    jray.kill(p, no_restart=False)

    def restarted() -> bool:
        try:
            return bool(jray.get(p.ids.remote(), timeout=30)["restarted"])
        except jray.exceptions.ActorDiedError:
            return False

    assert eventually(restarted, timeout=30), "the restarted actor did not say so"
    assert jray.get(p.__ray_call__.remote(lambda self: __import__("os").getpid()),
                    timeout=30) != pid
    assert jray.get(p.ids.remote(), timeout=30)["actor"] == actor_id
    jray.kill(p)


def test_async_actor_calls_each_see_their_own_task_id(cluster: dict[str, object]) -> None:
    p = AsyncProbe.remote()
    refs = [p.ids.remote(0.2), p.ids.remote(0.0), p.ids.remote(0.1)]
    t0 = time.monotonic()
    results = jray.get(refs, timeout=30)
    assert time.monotonic() - t0 < 10
    for before, after in results:
        assert before is not None and before == after
    assert len({before for before, _ in results}) == 3
    jray.kill(p)



def test_current_actor_is_a_handle_to_itself(cluster: dict[str, object]) -> None:
    p = Probe.remote()
    me = jray.get(p.self_handle.remote(), timeout=30)
    assert me == p
    assert jray.get(me.whoami.remote(), timeout=30) == "probe"
    with pytest.raises(RuntimeError, match="only available inside an actor"):
        _ = jray.get_runtime_context().current_actor
    jray.kill(p)


@jray.remote
def _names() -> tuple[str | None, str | None]:
    ctx = jray.get_runtime_context()
    return ctx.get_task_name(), ctx.get_task_function_name()


@jray.remote
class Named:
    def names(self) -> tuple[str | None, str | None]:
        ctx = jray.get_runtime_context()
        return ctx.get_task_name(), ctx.get_task_function_name()

    async def anames(self) -> tuple[str | None, str | None]:
        ctx = jray.get_runtime_context()
        return ctx.get_task_name(), ctx.get_task_function_name()


def test_task_and_function_names(cluster: dict[str, object]) -> None:
    here = __name__
    assert jray.get(_names.remote(), timeout=30) == ("_names", f"{here}._names")
    assert jray.get(_names.options(name="renamed").remote(), timeout=30) == (
        "renamed", f"{here}._names")
    ctx = jray.get_runtime_context()
    assert ctx.get_task_name() is None and ctx.get_task_function_name() is None
    for actor in (Named.remote(), Named.options(max_concurrency=2).remote()):
        assert jray.get(actor.names.remote(), timeout=30) == (
            "Named.names", f"{here}.Named.names")
        # an async method: its qualified name (Ray's function descriptor)
        assert jray.get(actor.anames.remote(), timeout=30) == (
            "Named.anames", f"{here}.Named.anames")
        jray.kill(actor)


def test_context_dict(cluster: dict[str, object]) -> None:
    driver = jray.get_runtime_context().get()
    assert set(driver) == {"job_id", "node_id"}
    assert driver["node_id"].hex() == jray.get_runtime_context().get_node_id()

    @jray.remote
    def in_task() -> tuple[dict[str, Any], str | None]:
        ctx = jray.get_runtime_context()
        return ctx.get(), ctx.get_task_id()

    got, task_id = jray.get(in_task.remote(), timeout=30)
    assert set(got) == {"job_id", "node_id", "task_id"}
    assert got["job_id"] == driver["job_id"] and got["node_id"] == driver["node_id"]
    assert got["task_id"].hex() == task_id
    p = Probe.remote()
    got = jray.get(p.__ray_call__.remote(lambda self: jray.get_runtime_context().get()),
                   timeout=30)
    assert set(got) == {"job_id", "node_id", "task_id", "actor_id"}
    assert got["actor_id"].hex() == p._actor_id.hex()
    jray.kill(p)
