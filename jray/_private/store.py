"""Object-store policy in the head: capacity, spilling and lost objects (no I/O).

Each node's shared-memory store has a capacity (``object_store_memory``).
Writers of large objects first ``RESERVE`` room; the head grants at once when
the node has room, and otherwise asks the node daemon to ``SPILL`` the least
recently used objects that no task pins, granting when ``SPILLED`` arrives.
Objects mapped by a live array somewhere on the node are refused by the node
(it checks ``/proc/*/maps``) and stay. Only when nothing can be spilled does
the writer get ``ObjectStoreFullError``.

::

    writer ──RESERVE──▶ head ──SPILL──▶ node daemon ──(sendfile)──▶ spill file
      ▲                  │  ◀──SPILLED (new locations)──┘
      └────RESERVED──────┘

A reader that finds a segment gone sends ``LOST`` with the location it saw.
If the object moved (spilled), the head answers with the new location; if
the bytes are really gone, the head rebuilds the object by re-running the
task that made it (lineage, see ``Scheduler.reconstruct``) or fails it with
``ObjectLostError``.

Freed segments of at least ``shm.POOL_MIN`` bytes go to the node's pool
(``POOL``) while it holds less than ``pool_cap`` (a quarter of the capacity,
at most 1 GiB); writers reuse them. Pooled bytes count against the capacity:
a grant predicts which pool file the writer claims (``shm.pick``), and a
reservation that does not fit first drops the pool (``POOL_TRIM``) before
anything is spilled. The node's ``POOL_STATE`` reports correct the model.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from typing import TYPE_CHECKING, Any

from jray._private import lineage, shm
from jray._private import protocol as P
from jray._private.pulls import Pulls
from jray._private.serialization import error_loc
from jray.exceptions import ObjectStoreFullError

if TYPE_CHECKING:
    from jray._private.scheduler import Scheduler
    from jray._private.state_tables import Node, Obj

MAPPED_RETRY_S = 1.0
#: A reservation at least this large waits for in-flight POOLs (a reuse saves more).
POOL_WAIT_MIN = 16 << 20
POOL_MAX = 1 << 30


class NodeStore:
    """Accounting of one node's store."""

    __slots__ = ("capacity", "used", "reserved", "spilling", "spilled_bytes", "lru",
                 "pending", "spills", "restores", "evictions", "reservations",
                 "pool", "pooled", "pool_cap", "trimming", "pool_inflight", "pool_acked",
                 "spill_error")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.used = 0
        self.reserved = 0
        self.spilling: set[bytes] = set()
        self.spilled_bytes = 0
        #: objects in shared memory, least recently used first
        self.lru: OrderedDict[bytes, int] = OrderedDict()
        #: reservations waiting for room: (sender, request id, oid, size)
        self.pending: list[tuple[bytes, int, bytes, int]] = []
        #: granted, not yet written: sizes per object id (a retried or re-run task
        #: reserves again under the same id)
        self.reservations: dict[bytes, list[int]] = {}
        self.spills = 0
        self.restores = 0
        self.evictions = 0
        #: sizes of the free segments in the node's pool (a model, see POOL_STATE)
        self.pool: list[int] = []
        self.pooled = 0
        self.pool_cap = min(capacity // 4, POOL_MAX)
        #: POOL_TRIM sent: grants wait for the node's POOL_STATE
        self.trimming = False
        #: sizes of POOL messages the node has not reported handling yet; how many it has
        self.pool_inflight: deque[int] = deque()
        self.pool_acked = 0
        #: why the node's last spill failed (disk full, read-only...): the reservations
        #: that need room fail with it instead of asking for another spill at once
        self.spill_error: str | None = None

    def summary(self) -> dict[str, Any]:
        return {
            "capacity": self.capacity, "used": self.used, "reserved": self.reserved,
            "spilled_bytes": self.spilled_bytes, "objects_in_memory": len(self.lru),
            "pooled": self.pooled,
            "spills": self.spills, "restores": self.restores, "evictions": self.evictions,
            "pending_reservations": len(self.pending),
        }


class StorePolicy:
    """The head's side of every node's object store."""

    def __init__(self, sched: Scheduler) -> None:
        self.sched = sched
        self.stores: dict[bytes, NodeStore] = {}
        self.mapped_at: dict[bytes, float] = {}
        #: reservations that arrived before their node registered
        self.early: dict[bytes, list[tuple[bytes, P.Msg]]] = {}
        sched.register(P.RESERVE, self.on_reserve)
        sched.register(P.SPILLED, self.on_spilled)
        sched.register(P.LOST, self.on_lost)
        sched.register(P.RESTORED, self.on_restored)
        sched.register(P.POOL_STATE, self.on_pool_state)
        sched.register(P.UNRESERVE, self.on_unreserve)
        #: copies of objects on other machines' nodes
        self.pulls = Pulls(sched)

    def add_node(self, node: Node, capacity: int) -> None:
        self.stores[node.node_id] = NodeStore(capacity)
        for sender, msg in self.early.pop(node.node_id, []):
            self.on_reserve(sender, msg)

    # --- accounting hooks called by the scheduler ----------------------------------
    def added(self, obj: Obj) -> None:
        loc = obj.loc
        if loc is None:
            return
        if loc[0] != P.LOC_SHM:  # e.g. an error stored instead of a reserved result
            for node_id, node_st in self.stores.items():
                if obj.oid in node_st.reservations:
                    self._release(node_st, obj.oid)
                    self._grant(node_id)
            return
        st = self.stores.get(loc[3])
        if st is None:
            return
        self._release(st, obj.oid)
        st.used += loc[2]
        st.lru[obj.oid] = loc[2]

    @staticmethod
    def _release(st: NodeStore, oid: bytes) -> None:
        sizes = st.reservations.get(oid)
        if sizes:
            st.reserved -= sizes.pop(0)
            if not sizes:
                del st.reservations[oid]

    def discarded(self, oid: bytes, loc: P.Loc) -> None:
        """A segment written for ``oid`` is dropped unused: release its reservation."""
        if loc[0] == P.LOC_SHM:
            st = self.stores.get(loc[3])
            if st is not None:
                self._release(st, oid)
                self._grant(loc[3])

    def touched(self, obj: Obj) -> None:
        loc = obj.loc
        if loc is not None and loc[0] == P.LOC_SHM:
            st = self.stores.get(loc[3])
            if st is not None and obj.oid in st.lru:
                st.lru.move_to_end(obj.oid)

    def forget(self, obj: Obj) -> None:
        """Drop the accounting of ``obj``'s current bytes (they are lost or replaced)."""
        loc = obj.loc
        if loc is None:
            return
        if loc[0] == P.LOC_SHM:
            st = self.stores.get(loc[3])
            if st is not None and st.lru.pop(obj.oid, None) is not None:
                st.used -= loc[2]
        elif loc[0] == P.LOC_SPILLED:
            st = self.stores.get(loc[4])
            if st is not None:
                st.spilled_bytes -= loc[3]

    def removed(self, obj: Obj) -> list[P.Msg]:
        """The object was collected: forget it and return what the node must delete."""
        loc = obj.loc
        if loc is None:
            return []
        self.pulls.removed(obj.oid)
        if loc[0] == P.LOC_SHM:
            st = self.stores.get(loc[3])
            msg: P.Msg = (P.UNLINK, [loc[1]])
            if st is not None and st.lru.pop(obj.oid, None) is not None:
                st.used -= loc[2]
                if (loc[2] >= shm.POOL_MIN and not st.trimming
                        and st.pooled + loc[2] <= st.pool_cap):
                    st.pool.append(loc[2])
                    st.pooled += loc[2]
                    st.pool_inflight.append(loc[2])
                    msg = (P.POOL, [loc[1]])
                self._grant(loc[3])
            return [msg]
        if loc[0] == P.LOC_SPILLED:
            st = self.stores.get(loc[4])
            if st is not None:
                st.spilled_bytes -= loc[3]
            return [(P.SPILL_FREE, [(loc[1], loc[3])])]
        return []

    # --- reservations ---------------------------------------------------------------
    def on_reserve(self, sender: bytes, msg: P.Msg) -> None:
        _, req, oid, size, node_id = msg
        st = self.stores.get(node_id)
        if st is None:  # the node has not registered yet (the cluster is starting)
            self.early.setdefault(node_id, []).append((sender, msg))
            return
        if size > st.capacity:
            err = ObjectStoreFullError(
                f"an object of {size:,} bytes is larger than the whole object store "
                f"({st.capacity:,} bytes, set by object_store_memory); it cannot be stored"
            )
            self.sched.send(sender, (P.RESERVED, req, error_loc(err)))
            return
        st.pending.append((sender, req, oid, size))
        self._grant(node_id)

    def _grant(self, node_id: bytes) -> None:
        st = self.stores[node_id]
        while st.pending:
            if st.trimming:
                return  # the pool is being dropped: wait for POOL_STATE
            sender, req, oid, size = st.pending[0]
            if st.pool_inflight and size >= POOL_WAIT_MIN:
                return  # let the node pool the segment first, so the writer finds it
            i = shm.pick(st.pool, size) if size >= shm.POOL_MIN else -1
            reuse = st.pool[i] if i >= 0 else 0  # the pool file the writer will claim
            if st.used + st.reserved + st.pooled - reuse + size > st.capacity:
                if st.pooled:
                    st.trimming = True
                    self.sched.send(self.sched.nodes[node_id].ident, (P.POOL_TRIM,))
                    return
                break
            if i >= 0:
                st.pool.pop(i)
                st.pooled -= reuse
            st.pending.pop(0)
            st.reserved += size
            st.reservations.setdefault(oid, []).append(size)
            self.sched.send(sender, (P.RESERVED, req, None))
        if st.pending:
            self._make_room(node_id, st)

    def on_unreserve(self, sender: bytes, msg: P.Msg) -> None:
        """A writer will not write what it reserved (its write failed, or it gave up)."""
        _, oid, node_id = msg
        st = self.stores.get(node_id)
        if st is None:  # still waiting for its node to register
            early = self.early.get(node_id, [])
            early[:] = [e for e in early if not (e[0] == sender and e[1][2] == oid)]
            return
        st.pending = [p for p in st.pending if not (p[0] == sender and p[2] == oid)]
        self._release(st, oid)
        self._grant(node_id)

    def _make_room(self, node_id: bytes, st: NodeStore) -> None:
        if st.spill_error is not None:
            why, st.spill_error = st.spill_error, None
            self._fail_pending(st, why)
            return
        need = st.used + st.reserved + sum(p[3] for p in st.pending) - st.capacity
        need -= sum(st.lru.get(oid, 0) for oid in st.spilling)
        if need <= 0:
            return
        if self.pulls.evict(node_id, need):  # copies of other machines' objects go first
            self._grant(node_id)
            return
        now = time.monotonic()
        victims: list[tuple[bytes, str, int]] = []
        objects = self.sched.objects
        for oid, size in st.lru.items():
            if need <= 0:
                break
            # Arguments of queued or running tasks may go too: a task that already
            # reads one has it mapped (the node refuses those); one that has not
            # yet will find the new location through LOST.
            obj = objects.get(oid)
            if obj is None or oid in st.spilling or oid in self.sched.view_bases:
                continue  # (a view's base: the view reads the base's segment)
            if now - self.mapped_at.get(oid, -1e9) < MAPPED_RETRY_S:
                continue
            victims.append((oid, obj.loc[1], size))  # type: ignore[index]
            st.spilling.add(oid)
            need -= size
        if victims:
            node = self.sched.nodes[node_id]
            self.sched.send(node.ident, (P.SPILL, victims))
        elif not st.spilling:
            self._fail_pending(st, "every object in it is in use (mapped by a live array "
                                   "or a running task)")

    def _fail_pending(self, st: NodeStore, why: str) -> None:
        for sender, req, _oid, size in st.pending:
            err = ObjectStoreFullError(
                f"the object store is full: {size:,} bytes requested, capacity "
                f"{st.capacity:,} bytes, {st.used:,} bytes used, and {why}"
            )
            self.sched.send(sender, (P.RESERVED, req, error_loc(err)))
        st.pending.clear()

    def on_spilled(self, sender: bytes, msg: P.Msg) -> None:
        _, node_id, spilled, refused, failed, error = msg
        st = self.stores[node_id]
        for oid in failed:  # still in shared memory: it stays there
            st.spilling.discard(oid)
        st.spill_error = error
        now = time.monotonic()
        for oid, loc in spilled:
            st.spilling.discard(oid)
            size = st.lru.pop(oid, None)
            obj = self.sched.objects.get(oid)
            if size is not None:
                st.used -= size
            st.spills += 1
            st.spilled_bytes += loc[3]
            if obj is None:  # collected meanwhile: the spilled copy is garbage
                st.spilled_bytes -= loc[3]
                self.sched.send(sender, (P.SPILL_FREE, [(loc[1], loc[3])]))
                continue
            obj.loc = loc
            self.sched.events.add("object_spilled", oid, loc[3])
        for oid in refused:
            st.spilling.discard(oid)
            self.mapped_at[oid] = now
        self._grant(node_id)
        st.spill_error = None

    def on_pool_state(self, sender: bytes, msg: P.Msg) -> None:
        st = self.stores.get(msg[1])
        if st is None:
            return
        _, _, sizes, handled = msg
        while st.pool_acked < handled and st.pool_inflight:
            st.pool_inflight.popleft()
            st.pool_acked += 1
        st.pool_acked = handled
        st.pool = [*sizes, *st.pool_inflight]
        st.pooled = sum(st.pool)
        st.trimming = False
        self._grant(msg[1])

    def on_restored(self, sender: bytes, msg: P.Msg) -> None:
        st = self.stores.get(msg[1])
        if st is not None:
            st.restores += msg[2]
            self.sched.events.add("object_restored", msg[1], msg[2])

    # --- lost objects ---------------------------------------------------------------
    def on_lost(self, sender: bytes, msg: P.Msg) -> None:
        _, oid, seen, *reader = msg
        obj = self.sched.objects.get(oid)
        if obj is None:
            self.sched.subscribe(sender, [oid])
            return
        holder = self.sched.nodes.get(obj.loc[-1]) if obj.loc is not None else None
        if reader and obj.loc is not None and (self.pulls.remote(obj.loc[-1], reader[0]) or (
                holder is not None and not holder.alive)):  # (a copy may live elsewhere)
            if self.pulls.on_lost(sender, obj, seen, reader[0]):
                return  # the reader's node pulls it (or has a copy)
        if obj.loc is not None and obj.loc != seen:  # it moved (spilled): here it is now
            self.sched.send(sender, (P.OBJECT_READY, oid, obj.loc))
            return
        lineage.reconstruct(self.sched, obj, sender)

    def summary(self) -> dict[str, Any]:
        return {node_id.hex(): {**st.summary(), **self.pulls.node_summary(node_id)}
                for node_id, st in self.stores.items()}
