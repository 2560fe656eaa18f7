"""Cluster membership in the head: nodes joining (NODE_REGISTER) and being lost.

Part of the scheduler's state machine (no I/O): it keeps the scheduler's node
table and reaches the rest of the scheduler only through its narrow interface
(``send``, ``check_feasible``, ``worker_died``) and ``node_lost_hooks``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from jray._private import protocol as P
from jray._private.resources import NodeResources
from jray._private.state_tables import Node, Task

if TYPE_CHECKING:
    from jray._private.scheduler import Scheduler


class Membership:
    """Joins and losses of nodes, registered with the scheduler it serves."""

    def __init__(self, sched: Scheduler) -> None:
        self.sched = sched
        sched.register(P.NODE_REGISTER, self.on_node_register)

    def on_node_register(self, sender: bytes, msg: P.Msg) -> None:
        """NODE_REGISTER: a node daemon joined with its resources and store capacity."""
        _, node_id, resources, hostname, pid, *extra = msg
        node = Node(node_id, sender, NodeResources(resources), hostname, pid)
        self.sched.store.pulls.add_node(node_id, tuple(extra))
        node.pending_spawns = int(resources.get("_initial_workers", 0))
        node.res.total.pop("_initial_workers", None)
        node.res.available.pop("_initial_workers", None)
        capacity = int(resources.get("_object_store_memory", 0))
        for key in ("_object_store_memory",):
            node.res.total.pop(key, None)
            node.res.available.pop(key, None)
        self.sched.nodes[node_id] = node
        if capacity:
            self.sched.store.add_node(node, capacity)
        self.sched.events.add("node_added", node_id, (dict(node.res.total), hostname, pid))
        self.sched.feasible.clear()
        for q in self.sched.ready.values():  # tasks submitted before any node could judge them
            for task in q:
                if not task.infeasible:
                    self.sched.check_feasible(task)

    def node_lost(self, node_id: bytes, why: str) -> None:
        """A node stopped answering (clusters: its heartbeats stopped): it gets no more
        work, its workers count as dead (their running tasks are retried elsewhere or
        fail), and extensions hear of it (its actors restart elsewhere). Its objects
        are rebuilt from lineage when a reader reports them ``LOST``."""
        node = self.sched.nodes.get(node_id)
        if node is None or not node.alive:
            return
        node.alive = False
        self.sched.events.add("node_lost", node_id, why)
        for wid in list(node.workers):
            self.sched.worker_died(node.ident, (P.WORKER_DIED, wid, -9))
        node.idle.clear()
        for hook in self.sched.node_lost_hooks:
            hook(node)
        self.sched.feasible.clear()


    def node_order(self, task: Task) -> Iterable[Node]:
        """The nodes to try for ``task``: first the one holding most of its arguments'
        bytes in shared memory, or copies of them (in a cluster the data need not
        travel), then the others in order; without such arguments, the node of the
        task that submitted it first (``_owner_first``); with one node, just the nodes."""
        nodes = self.sched.nodes
        if len(nodes) < 2:
            return nodes.values()
        deps = task.spec[P.T_DEPS]
        if not deps:
            return self._owner_first(task)
        weight: dict[bytes, int] = {}
        copies = self.sched.store.pulls.copies
        for oid in deps:
            obj = self.sched.objects.get(oid)
            loc = obj.loc if obj is not None else None
            if loc is not None and loc[0] == P.LOC_SHM:
                weight[loc[3]] = weight.get(loc[3], 0) + loc[2]
                for node_id, copy in copies.get(oid, {}).items():  # pulled there before
                    weight[node_id] = weight.get(node_id, 0) + copy[2]
        best = nodes.get(max(weight, key=weight.__getitem__)) if weight else None
        if best is None:
            return self._owner_first(task)
        return [best, *(n for n in nodes.values() if n is not best)]

    def _owner_first(self, task: Task) -> Iterable[Node]:
        """A task submitted by a task (its owner a worker) tries that worker's node first:
        nested work stays on its machine while it has room."""
        nodes = self.sched.nodes
        owner = self.sched.workers.get(task.owner)
        if owner is None:
            return nodes.values()
        near = owner.node
        return [near, *(n for n in nodes.values() if n is not near)]
