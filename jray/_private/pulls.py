"""Copies of objects on other machines' nodes, in the head (no I/O).

Nodes that share ``/dev/shm`` (one *store domain*: same kernel boot, same tmpfs)
read each other's segments directly. A reader on a node of another domain finds
the segment missing and reports ``LOST`` with its own node; then the head has
that node pull the object from a node holding it (``PULL_OBJECT``; the bytes go
node to node, see ``net.objects``), at most one pull per object and node at a
time: every reader on the node that asks meanwhile waits for it. The copy
(``PULLED``) is kept and counted in that node's store; readers there get its
location at once. Copies are dropped when the object is collected, when their
node is lost, and first when their node's store needs room (a later reader pulls
again).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from jray._private import lineage
from jray._private import protocol as P
from jray._private.serialization import error_loc
from jray.exceptions import ObjectLostError

if TYPE_CHECKING:
    from jray._private.scheduler import Scheduler
    from jray._private.state_tables import Node, Obj


class Pulls:
    """Store domains and object servers of nodes, copies, and pulls in flight."""

    def __init__(self, sched: Scheduler) -> None:
        self.sched = sched
        #: node id -> (store domain, object server address)
        self.servers: dict[bytes, tuple[str, str]] = {}
        #: oid -> node id -> the copy's location there
        self.copies: dict[bytes, dict[bytes, P.Loc]] = {}
        #: (oid, node id) -> (the node it pulls from, readers waiting for it)
        self.pending: dict[tuple[bytes, bytes], tuple[bytes, list[bytes]]] = {}
        #: node id -> [pulls started into it, bytes pulled, copies evicted]
        self.counts: dict[bytes, list[int]] = {}
        sched.register(P.PULLED, self.on_pulled)
        sched.node_lost_hooks.append(self.node_lost)

    def add_node(self, node_id: bytes, extra: tuple[object, ...]) -> None:
        if len(extra) >= 2 and isinstance(extra[0], str) and isinstance(extra[1], str):
            self.servers[node_id] = (extra[0], extra[1])

    def remote(self, node_id: bytes, reader: object) -> bool:
        """Whether ``node_id``'s segments are out of reach of readers on ``reader``."""
        if not isinstance(reader, bytes):
            return False
        a, b = self.servers.get(node_id), self.servers.get(reader)
        return a is not None and b is not None and a[0] != b[0]

    def on_lost(self, sender: bytes, obj: Obj, seen: P.Loc, reader: object) -> bool:
        """A reader on node ``reader`` missed ``obj``'s bytes; True when a copy there is
        (or is being) made, False when the caller should rebuild or fail it."""
        loc = obj.loc
        if not isinstance(reader, bytes) or loc is None or loc[0] not in (
                P.LOC_SHM, P.LOC_SPILLED):
            return False
        node = self.sched.nodes.get(reader)
        if node is None or not node.alive:
            return False
        copies = self.copies.get(obj.oid, {})
        have = copies.get(reader)
        if have is not None and have != seen:
            self.sched.send(sender, (P.OBJECT_READY, obj.oid, have))
            return True
        if have is not None:  # the copy itself went missing: forget it, pull again
            self._drop(obj.oid, reader, unlink=False)
        key = (obj.oid, reader)
        waiting = self.pending.get(key)
        if waiting is not None:
            waiting[1].append(sender)
            return True
        source = self._source(obj, reader)
        if source is None:
            return False
        src_node, src_loc, address = source
        self._make_room(reader, int(loc[2] if loc[0] == P.LOC_SHM else loc[3]))
        self.pending[key] = (src_node, [sender])
        self._count(reader)[0] += 1
        self.sched.send(node.ident, (P.PULL_OBJECT, obj.oid, src_loc, address))
        return True

    def _source(self, obj: Obj, reader: bytes) -> tuple[bytes, P.Loc, str] | None:
        """Where ``reader`` pulls from: the object's own node, else a live copy."""
        loc = obj.loc
        assert loc is not None
        holders = [(loc[-1], loc), *self.copies.get(obj.oid, {}).items()]
        for node_id, where in holders:
            node = self.sched.nodes.get(node_id)
            if node is None or not node.alive or not self.remote(node_id, reader):
                continue
            return node_id, where, self.servers[node_id][1]
        return None

    def _make_room(self, node_id: bytes, size: int) -> None:
        """Before a pull: drop older copies on ``node_id`` if the new one would not fit
        (its store's other objects are spilled only for reservations)."""
        st = self.sched.store.stores.get(node_id)
        if st is not None:
            need = st.used + st.reserved + size - st.capacity
            if need > 0:
                self.evict(node_id, need)

    def on_pulled(self, sender: bytes, msg: P.Msg) -> None:
        _, node_id, oid, loc, error = msg
        waiting = self.pending.pop((oid, node_id), (b"", []))[1]
        obj = self.sched.objects.get(oid)
        node = self.sched.nodes.get(node_id)
        if loc is not None and (obj is None or node is None or not node.alive):
            self.sched.send(sender, (P.UNLINK, [loc[1]]))  # collected meanwhile
            loc = None
        if obj is None:
            return
        if loc is None:
            if error is None:  # the node is gone: rebuild or fail as any lost object
                for reader in waiting:
                    lineage.reconstruct(self.sched, obj, reader)
                return
            err = error_loc(ObjectLostError(
                f"object {oid.hex()} could not be copied to node {node_id.hex()}: {error}"))
            for reader in waiting:
                self.sched.send(reader, (P.OBJECT_READY, oid, err))
            return
        self.copies.setdefault(oid, {})[node_id] = loc
        self._count(node_id)[1] += loc[2]
        st = self.sched.store.stores.get(node_id)
        if st is not None:
            st.used += loc[2]
        for reader in waiting:
            self.sched.send(reader, (P.OBJECT_READY, oid, loc))

    def _drop(self, oid: bytes, node_id: bytes, unlink: bool = True) -> None:
        copies = self.copies.get(oid)
        loc = copies.pop(node_id, None) if copies is not None else None
        if copies is not None and not copies:
            del self.copies[oid]
        if loc is None:
            return
        st = self.sched.store.stores.get(node_id)
        if st is not None:
            st.used -= loc[2]
        node = self.sched.nodes.get(node_id)
        if unlink and node is not None and node.alive:
            self.sched.send(node.ident, (P.UNLINK, [loc[1]]))

    def removed(self, oid: bytes) -> None:
        """``oid`` was collected: drop its copies."""
        for node_id in list(self.copies.get(oid, ())):
            self._drop(oid, node_id)

    def evict(self, node_id: bytes, need: int) -> int:
        """Drop copies on ``node_id`` until ``need`` bytes are free; bytes freed."""
        freed = 0
        for oid in list(self.copies):
            if freed >= need:
                break
            loc = self.copies[oid].get(node_id)
            if loc is not None:
                freed += loc[2]
                self._count(node_id)[2] += 1
                self._drop(oid, node_id)
        return freed

    def node_lost(self, node: Node) -> None:
        for oid in [o for o, c in self.copies.items() if node.node_id in c]:
            self._drop(oid, node.node_id, unlink=False)
        lost = node.node_id
        for key in [k for k, v in self.pending.items() if lost in (k[1], v[0])]:
            _, readers = self.pending.pop(key)
            obj = self.sched.objects.get(key[0])
            if obj is None or key[1] == lost:  # (readers on the lost node are gone)
                continue
            for reader in readers:  # its source is gone: pull from elsewhere, or rebuild
                if not self.on_lost(reader, obj, (), key[1]):
                    lineage.reconstruct(self.sched, obj, reader)

    def _count(self, node_id: bytes) -> list[int]:
        c = self.counts.get(node_id)
        if c is None:
            c = self.counts[node_id] = [0, 0, 0]
        return c

    def node_summary(self, node_id: bytes) -> dict[str, int]:
        """Pulls into ``node_id``, the bytes they brought, its copies now, evictions."""
        pulls, pulled, evicted = self.counts.get(node_id, (0, 0, 0))
        held = [c[node_id] for c in self.copies.values() if node_id in c]
        return {"pulls": pulls, "pulled_bytes": pulled, "copies": len(held),
                "copy_bytes": sum(int(loc[2]) for loc in held), "copies_evicted": evicted}
