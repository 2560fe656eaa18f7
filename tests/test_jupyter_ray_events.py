"""Ray's state rows turned into jray's event stream (``backends.ray_events``), without Ray:
the rows are shaped as Ray's state API gives them (recorded from Ray 2.60)."""

from __future__ import annotations

import time
from typing import Any

from jray.jupyter.backends.ray_events import (
    UNKNOWN_INPUTS,
    NotebookTasks,
    RayEvents,
    RaySource,
)
from jray.views.model import ViewModel

NODE = "f1521fc4f6fbc307c165c8e7b970a3de429261d57eb7574efa823efc"
JOB = "ffffffffffffffffffffffff01000000"


def tid(n: int) -> str:
    return f"{n:016x}" + JOB  # 8 unique bytes, a nil actor id, the job: Ray's layout


def ret(task: str, index: int = 1) -> str:
    return task + index.to_bytes(4, "little").hex()


def task(n: int, state: str, name: str = "f", **extra: Any) -> dict[str, Any]:
    row = {"task_id": tid(n), "name": name, "state": state, "worker_pid": 4242,
           "worker_id": "ab" * 28, "node_id": NODE, "creation_time_ms": 1_000_000 + n,
           "start_time_ms": 1_000_100 + n, "end_time_ms": None, "error_type": None,
           "error_message": None}
    if state in ("FINISHED", "FAILED"):
        row["end_time_ms"] = 1_000_200 + n
    row.update(extra)
    return row


def node(state: str = "ALIVE") -> dict[str, Any]:
    return {"node_id": NODE, "node_ip": "10.0.0.1", "state": state, "node_name": "head",
            "state_message": "gone" if state == "DEAD" else None,
            "resources_total": {"CPU": 2.0, "object_store_memory": 1000.0, "node:x": 1.0}}


def feed(model: ViewModel, events: RayEvents, **rows: list[dict[str, Any]]) -> None:
    model.apply(events.items({k: rows.get(k, []) for k in ("tasks", "objects", "nodes",
                                                          "actors")}))


def test_tasks_states_edges_and_cells() -> None:
    nb = NotebookTasks()
    # the notebook submitted 2 (reading 1's result) and 3; 4 came from elsewhere
    nb.record(tid(2), [ret(tid(1))], ("cell-a", 5))
    nb.record(tid(1), [], ("cell-a", 4))
    ev, model = RayEvents(nb), ViewModel()
    # within one millisecond Ray may list the consumer first: it is still drawn after
    same_ms = {"creation_time_ms": 7}
    feed(model, ev, nodes=[node()],
         tasks=[task(2, "PENDING_ARGS_AVAIL", **same_ms), task(1, "RUNNING", **same_ms),
                task(4, "RUNNING_IN_RAY_GET", name="g")])
    recs = {r["label"]: r for r in model.tasks.values()}
    one, two = (next(r for r in model.tasks.values() if r["cell"] == ["cell-a", n])
                for n in (4, 5))
    assert two["inputs"] == [one["id"]] and one["inputs"] == []
    assert one["state"] == "running" and one["pid"] == 4242 and one["node"] == NODE
    assert two["state"] == "waiting" and two["group"] == "In [5] f"
    other = recs["g" + UNKNOWN_INPUTS]  # not from this notebook: no inputs, and says so
    assert other["inputs"] == [] and other["state"] == "blocked" and other["cell"] is None
    # the next read: 1 finished, 2 failed, 4 cancelled
    feed(model, ev, nodes=[node()],
         tasks=[task(1, "FINISHED"), task(2, "FAILED", error_type="TASK_EXECUTION_EXCEPTION",
                                          error_message="ValueError: broken"),
                task(4, "FAILED", name="g", error_type="TASK_CANCELLED")])
    assert [model.tasks[h]["state"] for h in (one["id"], two["id"], other["id"])] == [
        "finished", "failed", "cancelled"]
    assert model.tasks[one["id"]]["end"] == 1000.201
    assert model.counts["finished"] == 1 and model.counts.get("running", 0) == 0
    text = ev.traceback(two["id"])
    assert "ValueError: broken" in text and tid(2) in text
    assert "not one Ray reported" in ev.traceback("00" * 16)
    assert [ln[1] for ln in model.summary()["timeline"]["4242"]] == [
        "f", "f", "g" + UNKNOWN_INPUTS]


def test_a_task_first_seen_finished_is_drawn_with_its_run() -> None:
    ev, model = RayEvents(hide=("OutputHub.",)), ViewModel()
    feed(model, ev, tasks=[task(9, "FINISHED"), task(10, "RUNNING", name="OutputHub.write")])
    (rec,) = model.tasks.values()
    assert rec["state"] == "finished" and rec["start"] == 1000.109 and rec["end"] == 1000.209
    feed(model, ev, tasks=[task(9, "FINISHED")])  # nothing changed: no new event
    assert ev.seq == 4  # submitted, worker_started, running, finished


def test_objects_nodes_actors_and_the_store() -> None:
    ev, model = RayEvents(), ViewModel()
    put = "00" + "ff" * 19 + "01000000" + "01e1f505"  # a driver's put
    objects = [{"object_id": ret(tid(1)), "object_size": 15, "ip": "10.0.0.1"},
               {"object_id": ret(tid(1)), "object_size": 15, "ip": "10.0.0.1"},  # 2 holders
               {"object_id": put, "object_size": 2_000_000, "ip": "10.0.0.1"}]
    actors = [{"actor_id": "cd" * 16, "class_name": "Engine", "state": "ALIVE", "pid": 77}]
    feed(model, ev, tasks=[task(1, "FINISHED")], objects=objects, nodes=[node()],
         actors=actors)
    assert model.nodes[NODE]["host"] == "head" and model.nodes[NODE]["alive"]
    assert model.nodes[NODE]["resources"] == {"CPU": 2.0, "object_store_memory": 1000.0}
    assert model.actors["cd" * 16] == {"actor_id": "cd" * 16, "state": "ALIVE",
                                       "class_name": "Engine", "pid": 77}
    summary = model.summary()
    assert summary["object_count"] == 2 and summary["object_bytes"] == 2_000_015
    made = {o["size"]: o for o in summary["objects"]}
    assert made[15]["task"] == next(iter(model.tasks)) and made[2_000_000]["task"] is None
    assert made[15]["where"] == "?" and made[15]["node"] == NODE  # Ray does not say where
    assert model.store == {NODE: {"used": 2_000_015, "capacity": 1000, "spilled_bytes": None}}
    # the put is freed, the node dies, the actor dies
    feed(model, ev, objects=objects[:1], nodes=[node("DEAD")],
         actors=[dict(actors[0], state="DEAD")])
    assert model.summary()["object_count"] == 1
    assert model.nodes[NODE]["alive"] is False and model.actors["cd" * 16]["state"] == "DEAD"


def test_source_polls_on_its_thread_and_survives_failed_reads() -> None:
    calls: list[float] = []

    def read() -> dict[str, list[dict[str, Any]]]:
        calls.append(time.monotonic())
        if len(calls) == 1:
            raise ConnectionError("API server not up yet")
        return {"tasks": [task(1, "RUNNING")], "objects": [], "nodes": [], "actors": []}

    src = RaySource(read, RayEvents(), poll_s=0.05)
    try:
        model = ViewModel()
        deadline = time.monotonic() + 10
        while not model.tasks and time.monotonic() < deadline:
            model.apply(src.take())
            time.sleep(0.02)
        assert [r["state"] for r in model.tasks.values()] == ["running"]
        assert src.error is None and len(calls) >= 2
    finally:
        src.close()
    assert not src.thread.is_alive()
