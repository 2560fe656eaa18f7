"""The state API's filters and the live event subscription, against a real cluster."""

from __future__ import annotations

import time
from typing import Any

import pytest

import jray
from jray._private import core
from jray._private import protocol as P
from jray.views import live

pytestmark = pytest.mark.integration


@jray.remote
def square(x: int) -> int:
    return x * x


@jray.remote
def total(*xs: int) -> int:
    return sum(xs)


@jray.remote(max_retries=0)
def boom() -> None:
    raise KeyError("boom in a task")


def _tid(ref: jray.ObjectRef) -> str:
    tid = P.task_of(ref.id)
    assert tid is not None
    return tid.hex()


def _until(pred: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout} s: {pred}")
        time.sleep(0.02)


def test_list_tasks_filters_by_state_label_and_limit(cluster: dict[str, object]) -> None:
    jray.get([square.remote(i) for i in range(5)], timeout=30)
    with pytest.raises(KeyError):
        jray.get(boom.remote(), timeout=30)
    squares = jray.state.list_tasks(label="square")
    assert len(squares) >= 5 and {r["name"] for r in squares} == {"square"}
    # the owner hears of the failure before the head records it: poll, bounded
    _until(lambda: bool(jray.state.list_tasks(state="FAILED")))
    failed = jray.state.list_tasks(state="FAILED")
    assert failed and {r["state"] for r in failed} == {"FAILED"}
    assert "boom" in {r["name"] for r in failed}
    newest = jray.state.list_tasks(limit=2)
    assert len(newest) == 2 and newest[-1]["name"] == "boom"
    assert jray.state.summary()["tasks"]["finished"] >= 5
    with pytest.raises(ValueError, match="list_tasks: state must be one of"):
        jray.state.list_tasks(state="sleeping")
    with pytest.raises(ValueError, match="list_tasks: limit"):
        jray.state.list_tasks(limit=0)
    with pytest.raises(ValueError, match="list_objects: where"):
        jray.state.list_objects(where="moon")


def test_list_objects_actors_nodes_and_events(cluster: dict[str, object]) -> None:
    ref = jray.put(b"x" * 200_000)
    rows = jray.state.list_objects(where="shared_memory")
    assert ref.hex() in {r["object_id"] for r in rows}
    assert len(jray.state.list_objects(limit=1)) == 1
    assert jray.state.list_nodes(alive=True) and not jray.state.list_nodes(alive=False)
    assert isinstance(jray.state.list_actors(), list)
    events = jray.state.list_events()
    assert events and {e[2] for e in events} >= {"node_added", "object_created"}
    assert all(isinstance(e[3], str) for e in events)


def test_live_model_follows_tasks_with_edges_tags_and_states(
        cluster: dict[str, object]) -> None:
    lv = live()
    _until(lambda: lv.step() is not None or lv.model.seq > 0)
    core.task_tag = ("cell-xyz", 7)
    try:
        leaves = [square.remote(i) for i in range(3)]
        root = total.remote(*leaves)
        bad = boom.remote()
    finally:
        core.task_tag = None
    assert jray.get(root, timeout=30) == 5
    with pytest.raises(KeyError):
        jray.get(bad, timeout=30)

    def settled() -> bool:
        lv.step()
        rec = lv.model.tasks.get(_tid(root))
        brec = lv.model.tasks.get(_tid(bad))
        return (rec is not None and rec["state"] == "finished" and brec is not None
                and brec["state"] == "failed")

    _until(settled)
    rec = lv.model.tasks[_tid(root)]
    assert rec["inputs"] == [_tid(r) for r in leaves]
    assert rec["cell"] == ["cell-xyz", 7] and rec["group"] == "In [7] total"
    assert rec["node"] is not None and rec["pid"] is not None
    assert rec["x"] == 1 + max(lv.model.tasks[_tid(r)]["x"] for r in leaves)
    assert lv is live()  # one model per cluster
