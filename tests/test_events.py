"""The event stream as state machines: the log, the head's feed, the view model.

No process and no socket: a ``Scheduler`` is fed the messages a node daemon,
workers and drivers send (``test_scheduler.Head``), and the tests read what
the feed puts in its outbox and what the model makes of it.
"""

from __future__ import annotations

import time
from typing import Any, get_args

import pytest
from test_scheduler import DRIVER, Head

from jray._private import event_feed
from jray._private import protocol as P
from jray._private.events import DETAILS, EVENT_KINDS, EventKind, EventLog, to_plain
from jray.views.model import ViewModel

VIEWER = b"viewer-1"


# --- the log ------------------------------------------------------------------------
def test_every_kind_is_documented_once() -> None:
    assert sorted(DETAILS) == sorted(EVENT_KINDS) == sorted(set(get_args(EventKind)))


def test_since_returns_what_follows_in_order_across_the_ring_wrap() -> None:
    log = EventLog(maxlen=5)
    for i in range(12):
        log.add("object_created", bytes([i]), i)
    assert (log.seq, log.first_seq, len(log)) == (12, 8, 5)
    assert [e[0] for e in log.since(0)] == [8, 9, 10, 11, 12]  # older ones are gone
    assert [e[4] for e in log.since(9)] == [9, 10, 11]
    assert [e[0] for e in log.since(8, limit=2)] == [9, 10]
    assert log.since(12) == []
    assert to_plain(log.since(11)[0])[2:] == ("object_created", "0b", 11)


def test_a_poll_costs_the_events_it_returns_not_the_log_size() -> None:
    log = EventLog()  # the full default size, filled
    for _ in range(log._size):
        log.add("task_ready", b"x", None)
    t0 = time.perf_counter()
    for _ in range(1000):
        got = log.since(log.seq - 10)
    per_poll = (time.perf_counter() - t0) / 1000
    assert len(got) == 10
    # a scan of 200,000 entries takes milliseconds; returning 10 takes microseconds
    assert per_poll < 0.0005, f"{per_poll * 1e3:.3f} ms per poll of 10 events"


def test_event_log_refuses_a_size_below_one() -> None:
    with pytest.raises(ValueError, match="maxlen"):
        EventLog(0)


# --- the feed -----------------------------------------------------------------------
@pytest.fixture
def no_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(event_feed, "PUSH_INTERVAL_S", 0.0)


def _of(out: dict[bytes, list[P.Msg]], ident: bytes, op: int) -> list[P.Msg]:
    return [m for m in out.get(ident, []) if m[0] == op]


def test_subscriber_gets_a_snapshot_then_one_delta_per_ack(no_interval: None) -> None:
    h = Head()
    h.worker()
    done, _ = h.submit(name="first")
    out = h.send(VIEWER, (P.EVENTS_SUBSCRIBE, 1000))
    (snap,) = _of(out, VIEWER, P.EVENTS_SNAPSHOT)
    assert snap[1] == h.sched.events.seq
    assert [row[0] for row in snap[2]["tasks"]] == [done]
    assert snap[2]["nodes"][0][0] == b"node0001" and snap[2]["workers"]
    # nothing more before an ack, however much happens
    a, out = h.submit(name="a")
    b, out2 = h.submit(deps=(P.return_id(a, 0),), name="b")
    assert not _of(out, VIEWER, P.EVENTS_DELTA) and not _of(out2, VIEWER, P.EVENTS_DELTA)
    out = h.send(VIEWER, (P.EVENTS_ACK, 0))
    (delta,) = _of(out, VIEWER, P.EVENTS_DELTA)
    events = delta[1]
    assert [e[0] for e in events] == list(range(snap[1] + 1, h.sched.events.seq + 1))
    submitted = {e[3]: e[4] for e in events if e[2] == "task_submitted"}
    assert submitted[b][0] == "b" and submitted[b][1] == [P.return_id(a, 0)]
    assert submitted[b][2] == [P.return_id(b, 0)] and submitted[b][3] == DRIVER
    assert {e[2] for e in events} >= {"task_submitted", "task_waiting", "task_ready"}


def test_deltas_wait_for_the_push_interval() -> None:
    h = Head()
    h.send(VIEWER, (P.EVENTS_SUBSCRIBE, 1000))
    h.send(VIEWER, (P.EVENTS_ACK, 0))
    _, out = h.submit()
    assert not _of(out, VIEWER, P.EVENTS_DELTA)  # the snapshot went out just now
    time.sleep(event_feed.PUSH_INTERVAL_S + 0.02)
    out = h.send(DRIVER, (P.FREE, []))
    assert len(_of(out, VIEWER, P.EVENTS_DELTA)) == 1


def test_a_subscriber_far_behind_gets_a_snapshot_not_the_backlog(no_interval: None) -> None:
    h = Head()
    h.send(VIEWER, (P.EVENTS_SUBSCRIBE, 5))
    for _ in range(10):  # the viewer does not ack: more than 5 events pile up
        h.submit()
    out = h.send(VIEWER, (P.EVENTS_ACK, 0))
    assert not _of(out, VIEWER, P.EVENTS_DELTA)
    (snap,) = _of(out, VIEWER, P.EVENTS_SNAPSHOT)
    assert len(snap[2]["tasks"]) == 10
    assert h.sched.feed.snapshots_sent == 2


def test_a_subscriber_that_never_acks_costs_nothing_per_event(no_interval: None) -> None:
    h = Head()
    h.send(VIEWER, (P.EVENTS_SUBSCRIBE, 1000))
    sent = h.sched.feed.events_sent
    for _ in range(50):
        _, out = h.submit()
        assert VIEWER not in out
    assert h.sched.feed.events_sent == sent


def test_unsubscribe_stops_the_flow(no_interval: None) -> None:
    h = Head()
    h.send(VIEWER, (P.EVENTS_SUBSCRIBE, 1000))
    h.send(VIEWER, (P.EVENTS_UNSUBSCRIBE,))
    h.send(VIEWER, (P.EVENTS_ACK, 0))
    _, out = h.submit()
    assert VIEWER not in out and not h.sched.feed.subs


# --- the model ----------------------------------------------------------------------
def _feed(h: Head, model: ViewModel, ident: bytes = VIEWER) -> None:
    out = h.send(ident, (P.EVENTS_ACK, 0))
    items: list[tuple[Any, ...]] = []
    for m in out.get(ident, []):
        if m[0] == P.EVENTS_SNAPSHOT:
            items.append(("snapshot", m[1], m[2]))
        elif m[0] == P.EVENTS_DELTA:
            items.append(("delta", m[1], m[2]))
    model.apply(items)


def _finish(h: Head, worker: bytes, tid: bytes, ok: bool = True) -> None:
    status = P.DONE_OK if ok else P.DONE_ERROR
    h.send(worker, (P.TASK_DONE, tid, [(P.return_id(tid, 0), (P.LOC_INLINE, b"x"))], status,
                    1.0, 2.0, []))


def test_model_draws_edges_and_a_layout_that_never_moves(no_interval: None) -> None:
    h = Head()
    w = h.worker()
    model = ViewModel()
    a, _ = h.submit(name="a")
    out = h.send(VIEWER, (P.EVENTS_SUBSCRIBE, 10_000))
    model.apply([("snapshot", m[1], m[2]) for m in _of(out, VIEWER, P.EVENTS_SNAPSHOT)])
    first = model.patch()
    assert first is not None and first["type"] == "full"
    b, _ = h.submit(name="b")
    c, _ = h.submit(deps=(P.return_id(a, 0), P.return_id(b, 0)), name="c")
    _feed(h, model)
    ta, tb, tc = (model.tasks[t.hex()] for t in (a, b, c))
    assert tc["inputs"] == [a.hex(), b.hex()]
    assert (ta["x"], tb["x"], tc["x"]) == (0, 0, 1)
    assert ta["y"] != tb["y"] and min(ta["y"], tb["y"]) <= tc["y"] <= max(ta["y"], tb["y"])
    patch = model.patch()
    assert patch is not None and {r["id"] for r in patch["new"]} == {b.hex(), c.hex()}
    before = {k: (r["x"], r["y"]) for k, r in model.tasks.items()}
    _finish(h, w, a)
    _feed(h, model)
    assert {k: (r["x"], r["y"]) for k, r in model.tasks.items()} == before
    assert model.tasks[a.hex()]["state"] == "finished"
    assert model.counts["finished"] == 1 and sum(model.counts.values()) == 3
    patch = model.patch()
    assert patch is not None and a.hex() in [row[0] for row in patch["changed"]]
    assert model.patch() is None  # nothing new since


def test_model_folds_old_finished_tasks_into_one_node_per_group(no_interval: None) -> None:
    h = Head({"CPU": 1.0})
    w = h.worker()
    model = ViewModel(fold_at=5)
    h.send(VIEWER, (P.EVENTS_SUBSCRIBE, 10_000))
    model.apply([])
    for i in range(8):
        tid, _ = h.submit(name="leaf")
        _finish(h, w, tid, ok=i != 1)
    _feed(h, model)
    assert len(model.tasks) == 5
    (group,) = model.folded.values()
    assert (group["group"], group["count"], group["failed"]) == ("leaf", 3, 1)
    assert model.counts["finished"] + model.counts["failed"] == 8  # counts keep everything


def test_model_takes_cell_tags_as_groups(no_interval: None) -> None:
    h = Head()
    model = ViewModel()
    h.send(VIEWER, (P.EVENTS_SUBSCRIBE, 10_000))
    tid = h.ids.task_id()
    spec = (tid, b"f" * 16, b"code", "cell_3", b"", [], [P.return_id(tid, 0)], {"CPU": 1.0}, 0,
            False, "ipc://o", "ipc://out", [], ("cell-abc", 3))
    h.send(DRIVER, (P.SUBMIT, spec))
    _feed(h, model)
    rec = model.tasks[tid.hex()]
    assert rec["cell"] == ["cell-abc", 3] and rec["group"] == "In [3] cell_3"


def test_the_head_wakes_up_for_a_delta_that_is_due_while_idle() -> None:
    h = Head()
    h.send(VIEWER, (P.EVENTS_SUBSCRIBE, 1000))
    feed = h.sched.feed
    assert feed.poll_ms(200) == 200  # nothing owed: the head may sleep its usual time
    h.send(VIEWER, (P.EVENTS_ACK, 0))
    h.submit()  # events arrive within the push interval: not sent yet
    wait = feed.poll_ms(200)
    assert 1 <= wait <= event_feed.PUSH_INTERVAL_S * 1000 + 1
    time.sleep(wait / 1000)
    assert _of(h.sched.take_outbox(), VIEWER, P.EVENTS_DELTA)  # what the idle head sends


def test_model_keeps_the_store_totals_and_largest_objects_as_objects_come_and_go() -> None:
    model = ViewModel()
    tid = b"t" * 14 + b"\0\0"
    node = b"n" * 8
    evs: list[Any] = [
        (1, 1.0, "task_submitted", tid, ("f", [], [P.return_id(tid, 0)], b"o", None)),
        (2, 1.1, "object_created", P.return_id(tid, 0), (500, P.LOC_SHM, node)),
        (3, 1.2, "object_created", b"p" * 14 + b"\xff\xff", (90, P.LOC_INLINE, None)),
        (4, 1.3, "object_spilled", P.return_id(tid, 0), 500),
    ]
    model.apply([("delta", evs, {})])
    s = model.summary()
    assert (s["object_count"], s["object_bytes"]) == (2, 590)
    big, small = s["objects"]
    assert (big["id"], big["size"], big["where"], big["node"], big["task"]) == (
        P.return_id(tid, 0).hex(), 500, "spilled", node.hex(), tid.hex())
    assert (small["size"], small["where"], small["task"]) == (90, "inline", None)
    model.apply([("delta", [(5, 1.4, "object_freed", P.return_id(tid, 0), 500)], {})])
    s = model.summary()
    assert (s["object_count"], s["object_bytes"], s["objects"][0]["size"]) == (1, 90, 90)
    assert model.seq == 5 and model.counts == {"submitted": 1}


def test_an_object_is_pinned_while_a_task_needs_it_and_the_model_shows_it(
        no_interval: None) -> None:
    h = Head({"CPU": 1.0})
    w = h.worker()
    model = ViewModel()
    h.send(VIEWER, (P.EVENTS_SUBSCRIBE, 10_000))
    a, _ = h.submit(name="a")
    b, _ = h.submit(deps=(P.return_id(a, 0),), name="b")
    ra = P.return_id(a, 0)
    pinned = [e for e in h.sched.events.since(0) if e[2] == "object_pinned"]
    assert [(e[3], e[4]) for e in pinned] == [(ra, b)]  # b's input, pinned by b at submit
    _finish(h, w, a)
    _feed(h, model)
    assert model.summary()["objects"][0]["pins"] == 1  # created after the pin: still pinned
    _finish(h, w, b)
    unpinned = [e for e in h.sched.events.since(0) if e[2] == "object_unpinned"]
    assert [(e[3], e[4]) for e in unpinned] == [(ra, b)]
    assert h.sched.objects[ra].pins == 0
    _feed(h, model)
    by_id = {o["id"]: o for o in model.summary()["objects"]}
    assert by_id[ra.hex()]["pins"] == 0


def test_the_typescript_mirror_lists_every_event_kind() -> None:
    import pathlib
    import re

    ts = (pathlib.Path(__file__).resolve().parent.parent / "labextension" / "src"
          / "protocol.ts").read_text()
    union = ts[ts.index("export type EventKind"):]
    union = union[:union.index(";")]
    assert sorted(re.findall(r"'([a-z_]+)'", union)) == sorted(EVENT_KINDS)


def test_model_finds_the_largest_objects_again_only_as_they_change() -> None:
    from jray.views.model import TOP_OBJECTS

    model = ViewModel()
    ids = [bytes([i]) * 14 + b"\xff\xff" for i in range(1, 40)]
    seq = iter(range(1, 1000))
    model.apply([("delta", [(next(seq), 1.0, "object_created", oid, (10 * i, P.LOC_INLINE, None))
                            for i, oid in enumerate(ids)], {})])
    sizes = [o["size"] for o in model.summary()["objects"]]
    assert sizes == [10 * i for i in range(38, 38 - TOP_OBJECTS, -1)]
    model.apply([("delta", [(next(seq), 2.0, "object_created", b"z" * 14 + b"\xff\xff",
                             (1, P.LOC_INLINE, None)),  # too small to matter
                            (next(seq), 2.1, "object_freed", ids[38], 380),
                            (next(seq), 2.2, "object_created", b"y" * 14 + b"\xff\xff",
                             (375, P.LOC_INLINE, None))], {})])
    sizes = [o["size"] for o in model.summary()["objects"]]
    assert sizes == [375] + [10 * i for i in range(37, 37 - TOP_OBJECTS + 1, -1)]
    assert model.summary()["object_bytes"] == sum(10 * i for i in range(38)) + 1 + 375
