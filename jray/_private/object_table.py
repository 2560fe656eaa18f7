"""The head's object table: registration, subscriptions, holders and collection.

A mixin of ``Scheduler`` (same state machine, no I/O). An object is collected
when its owner released it (``FREE``), no borrowing process or containing
object holds it (``holders``), no pending or running task pins it (``pins``),
and no task waits for it; its bytes are then deleted through its node, and
the refs it contained lose a holder in turn.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from jray._private import protocol as P
from jray._private.actor_protocol import LIFETIME_TAG
from jray._private.events import EventLog
from jray._private.serialization import error_loc
from jray._private.state_tables import Node, Obj, Task
from jray.exceptions import ObjectLostError

if TYPE_CHECKING:
    from jray._private.store import StorePolicy
    from jray._private.unknown_objects import UnknownObjects


class ObjectTable:
    objects: dict[bytes, Obj]
    #: objects other objects are views of (``LOC_VIEW``), with how many: never spilled
    view_bases: dict[bytes, int]
    nodes: dict[bytes, Node]
    events: EventLog
    store: StorePolicy
    #: called with the id of a collected actor lifetime object (``actor_protocol``)
    lifetime_hooks: list[Callable[[bytes], None]]

    unknown: UnknownObjects

    def _send(self, ident: bytes, msg: P.Msg) -> None:
        raise NotImplementedError

    def _fail(self, task: Task, loc: P.Loc) -> None:
        raise NotImplementedError

    def _make_ready(self, task: Task) -> None:
        raise NotImplementedError

    # --- objects ------------------------------------------------------------------
    def _on_put(self, sender: bytes, msg: P.Msg) -> None:
        _, oid, loc, contained = msg
        obj = Obj(oid, sender, None)
        self.objects[oid] = obj
        if contained:
            self._contain(obj, contained)
        self._object_ready(obj, loc, notify_owner=False)

    def _contain(self, obj: Obj, inner: list[bytes]) -> None:
        obj.contains = inner
        for oid in inner:
            o = self.objects.get(oid)
            if o is not None:
                o.holders += 1

    def _on_borrow(self, sender: bytes, msg: P.Msg) -> None:
        for oid in msg[1]:
            obj = self.objects.get(oid)
            if obj is not None:
                obj.holders += 1
            elif self.unknown.is_unknown(oid):  # its record is still on its way
                self.unknown.borrow(oid, 1)

    def _on_unborrow(self, sender: bytes, msg: P.Msg) -> None:
        for oid in msg[1]:
            obj = self.objects.get(oid)
            if obj is not None:
                obj.holders -= 1
                self._maybe_collect(obj)
            elif oid in self.unknown.borrows:  # borrowed before its record came
                self.unknown.borrow(oid, -1)

    def _on_subscribe(self, sender: bytes, msg: P.Msg) -> None:
        self.subscribe(sender, msg[1])

    def subscribe(self, sender: bytes, oids: list[bytes], wait: bool = True) -> None:
        """Send ``sender`` OBJECT_READY for each of ``oids`` once it exists (one never
        heard of waits a while for its record: ``unknown_objects``)."""
        for oid in oids:
            obj = self.objects.get(oid)
            if obj is None:
                if wait and self.unknown.is_unknown(oid):
                    self.unknown.park_subscriber(sender, oid)
                    continue
                err = ObjectLostError(self.unknown.why_lost(oid))
                self._send(sender, (P.OBJECT_READY, oid, error_loc(err)))
            elif obj.loc is not None:
                self.store.touched(obj)
                self._send(sender, (P.OBJECT_READY, oid, obj.loc))
            elif obj.subscribers is None:
                obj.subscribers = [sender]
            else:
                obj.subscribers.append(sender)

    def _on_free(self, sender: bytes, msg: P.Msg) -> None:
        for oid in msg[1]:
            obj = self.objects.get(oid)
            if obj is not None:
                obj.freed = True
                self._maybe_collect(obj)

    def _maybe_collect(self, obj: Obj) -> None:
        if (obj.freed and obj.pins == 0 and obj.holders <= 0 and obj.loc is not None
                and not obj.dependents):
            if self.unknown.borrows and self.unknown.take_borrows(obj):
                return  # processes borrowed it before the head knew of it
            del self.objects[obj.oid]
            self.unknown.collected(obj.oid)
            self.events.add("object_freed", obj.oid, obj.size)
            self._delete_data(obj)
            if obj.oid[14:] == LIFETIME_TAG:
                for hook in self.lifetime_hooks:
                    hook(obj.oid)
            if obj.contains:
                for oid in obj.contains:
                    inner = self.objects.get(oid)
                    if inner is not None:
                        inner.holders -= 1
                        self._maybe_collect(inner)

    def _unlink(self, loc: P.Loc, oid: bytes | None = None) -> None:
        """Delete a segment nobody will read; ``oid``: the object it was written for."""
        if oid is not None:
            self.store.discarded(oid, loc)
        if loc[0] == P.LOC_SHM:
            node = self.nodes.get(loc[3])
            if node is not None:
                self._send(node.ident, (P.UNLINK, [loc[1]]))

    def _delete_data(self, obj: Obj) -> None:
        loc = obj.loc
        if loc is not None and loc[0] == P.LOC_VIEW:
            for base in loc[3]:
                left = self.view_bases.get(base, 0) - 1
                if left > 0:
                    self.view_bases[base] = left
                else:
                    self.view_bases.pop(base, None)
        if loc is None or loc[0] in (P.LOC_INLINE, P.LOC_ERROR, P.LOC_VIEW):
            return
        node = self.nodes.get(loc[-1])
        for msg in self.store.removed(obj):
            if node is not None:
                self._send(node.ident, msg)

    def _object_ready(self, obj: Obj, loc: P.Loc, notify_owner: bool) -> None:
        if obj.loc is not None:  # first writer wins (e.g. cancelled, then finished)
            if loc != obj.loc:
                self._unlink(loc, obj.oid)
            return
        obj.loc = loc
        obj.size = len(loc[1]) if loc[0] != P.LOC_SHM else loc[2]
        if loc[0] == P.LOC_VIEW:
            for base in loc[3]:
                self.view_bases[base] = self.view_bases.get(base, 0) + 1
        self.store.added(obj)
        self.events.add("object_created", obj.oid,
                        (obj.size, loc[0], loc[-1] if loc[0] == P.LOC_SHM else None))
        if notify_owner:
            self._send(obj.owner, (P.OBJECT_READY, obj.oid, loc))
        if obj.subscribers:
            for ident in obj.subscribers:
                if ident != obj.owner or not notify_owner:
                    self._send(ident, (P.OBJECT_READY, obj.oid, loc))
            obj.subscribers = None
        if obj.dependents:
            deps, obj.dependents = obj.dependents, None
            failed = loc[0] == P.LOC_ERROR
            for task in deps:
                if task.state != "waiting":
                    continue
                if failed:
                    self._fail(task, loc)
                else:
                    task.waiting -= 1
                    if task.waiting == 0:
                        self._make_ready(task)
        self._maybe_collect(obj)

    # the narrow interface of the object table (store policy, lineage, actors, leases)
    object_ready, unlink, contain = _object_ready, _unlink, _contain
    maybe_collect = _maybe_collect
