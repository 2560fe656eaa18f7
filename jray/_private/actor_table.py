"""The head's actor table: creation, placement, names, restarts, checkpoints (no I/O).

Plugged into the ``Scheduler`` with ``register`` (one handler per actor op) and
a schedule hook (actors waiting for resources are placed when they free up).
Like the scheduler it only appends messages to ``sched.out``; tests drive it
with no process at all. Life of one actor::

    creator ──ACTOR_CREATE──▶ table: PENDING_CREATION ──ACTOR_SPAWN──▶ node daemon
                                                                        │ starts
    actor process ──ACTOR_HELLO──▶ table ──ACTOR_INIT(spec, checkpoint)──▶ actor
    actor process ──ACTOR_ALIVE(call address)──▶ table: ALIVE
                     └──ACTOR_STATE──▶ every subscriber (creator, lookups)
    callers ──ACTOR_CALL──▶ actor (direct; the head never sees calls)
    actor ──ACTOR_RESULTS──▶ table: results become objects (tasks may depend on them)
    node daemon ──ACTOR_PROC_DIED(exit code)──▶ table: RESTARTING (max_restarts
                     left: spawn again, restore the checkpoint) or DEAD

Callers register the results of the calls they send (``ACTOR_EXPECT``) on
their own channel to the head, before anything else they send can mention
them; the actor's ``ACTOR_RESULTS`` then fills them in. Either may arrive
first. Resources: an actor created with explicit resources holds them while
alive; a default actor is placed where one CPU exists and holds nothing
(Ray's rule), so idle actors never starve tasks.
"""

from __future__ import annotations

import time
from collections import deque
from typing import TYPE_CHECKING, Any

from jray._private import actor_protocol as A
from jray._private import protocol as P
from jray._private.events import EventKind
from jray._private.serialization import error_loc
from jray._private.state_tables import Node, Obj
from jray.exceptions import ActorDiedError

if TYPE_CHECKING:
    from jray._private.scheduler import Scheduler

SIGKILL = 9
#: exception retries remembered per actor (for calls that may be resent after a restart)
RETRIED_MAX = 4096
#: how long the head waits for the creation of an actor it is asked about
EARLY_LOOKUP_S = 5.0


class ActorRecord:
    __slots__ = ("actor_id", "spec", "owner", "state", "incarnation", "node", "proc", "addr",
                 "pid", "restarts_left", "num_restarts", "subscribers", "checkpoint",
                 "checkpoints", "cause", "holding", "gpu_ids", "no_restart", "killed",
                 "exit_reason", "spawned", "created", "retried")

    def __init__(self, spec: A.ActorSpec, owner: bytes) -> None:
        self.actor_id = spec["actor_id"]
        self.spec = spec
        self.owner = owner
        self.state = A.PENDING
        self.incarnation = -1
        self.node: Node | None = None
        self.proc = b""
        self.addr = ""
        self.pid = 0
        self.restarts_left = spec["max_restarts"]
        self.num_restarts = 0
        self.subscribers: set[bytes] = {owner}
        self.checkpoint: P.Loc | None = None
        self.checkpoints = 0
        self.cause: P.Loc | None = None
        self.holding = False
        self.gpu_ids: list[int] = []
        self.no_restart = False
        self.killed = False
        self.exit_reason = ""
        self.spawned = False
        self.created = time.time()
        #: call key -> exception retries used (``ACTOR_RETRIED``), for restarts
        self.retried: dict[bytes, int] = {}

    @property
    def label(self) -> str:
        return f"actor {self.spec['meta']['class_name']} ({self.actor_id.hex()[:12]})"


class ActorTable:
    """Actor state of one cluster (see module docstring)."""

    def __init__(self, sched: Scheduler) -> None:
        self.sched = sched
        self.actors: dict[bytes, ActorRecord] = {}
        self.named: dict[tuple[str, str], bytes] = {}
        self.pending: deque[ActorRecord] = deque()
        self.per_node: dict[bytes, int] = {}
        #: lifetime object id -> actor id, for actors that die with their handles
        self.by_life: dict[bytes, bytes] = {}
        #: lookups of actors not created yet: a handle can reach a process (and its
        #: lookup the head) before the creator's ACTOR_CREATE (peers are read in no
        #: global order); actor id -> (when first asked, who asked)
        self.early: dict[bytes, tuple[float, list[bytes]]] = {}
        sched.holders.append(self._held)
        sched.lifetime_hooks.append(self._on_lifetime_end)
        for op, fn in (
            (A.ACTOR_CREATE, self._on_create),
            (A.ACTOR_LOOKUP, self._on_lookup),
            (A.ACTOR_REQUEST, self._on_request),
            (A.ACTOR_KILL, self._on_kill),
            (A.ACTOR_EXPECT, self._on_expect),
            (A.ACTOR_CALLS_FAILED, self._on_calls_failed),
            (A.ACTOR_HELLO, self._on_hello),
            (A.ACTOR_ALIVE, self._on_alive),
            (A.ACTOR_INIT_FAILED, self._on_init_failed),
            (A.ACTOR_RESULTS, self._on_results),
            (A.ACTOR_CHECKPOINT, self._on_checkpoint),
            (A.ACTOR_EXITING, self._on_exiting),
            (A.ACTOR_RETRIED, self._on_retried),
            (A.ACTOR_PROC_DIED, self._on_proc_died),
        ):
            sched.register(op, fn)
        sched.schedule_hooks.append(self.place_pending)
        sched.schedule_hooks.append(self._expire_early)
        sched.node_lost_hooks.append(self._on_node_lost)
        sched.snapshot_parts["actors"] = lambda: [self.row(r) for r in self.actors.values()]

    # --- helpers ------------------------------------------------------------------
    def _current(self, actor_id: bytes, inc: int) -> ActorRecord | None:
        rec = self.actors.get(actor_id)
        if rec is None or rec.incarnation != inc or rec.state == A.DEAD:
            return None
        return rec

    def _state_msg(self, rec: ActorRecord) -> P.Msg:
        return (A.ACTOR_STATE, rec.actor_id, rec.state, rec.incarnation, rec.addr, rec.cause)

    def _notify(self, rec: ActorRecord) -> None:
        msg = self._state_msg(rec)
        for ident in rec.subscribers:
            self.sched.send(ident, msg)

    def _reply(self, ident: bytes, req: int, ok: bool, payload: Any) -> None:
        if req:
            self.sched.send(ident, (A.ACTOR_REPLY, req, ok, payload))

    def _event(self, rec: ActorRecord, kind: EventKind, detail: Any = None) -> None:
        self.sched.events.add(kind, rec.actor_id, detail)

    # --- creation and placement -----------------------------------------------------
    def _on_create(self, sender: bytes, msg: P.Msg) -> None:
        _, spec, req = msg
        name, ns = spec["name"], spec["namespace"]
        if name is not None:
            existing = self.named.get((ns, name))
            if existing is not None:
                old = self.actors[existing]
                if spec["get_if_exists"]:
                    old.subscribers.add(sender)
                    self._reply(sender, req, True, (old.actor_id, old.spec["meta"]))
                    self.sched.send(sender, self._state_msg(old))
                else:
                    where = f" in namespace {ns!r}" if ns else ""
                    self._reply(sender, req, False,
                                f"an actor named {name!r} already exists{where} "
                                f"({old.label}); pick another name, or pass "
                                f"get_if_exists=True to get a handle to it")
                return
            self.named[(ns, name)] = spec["actor_id"]
        rec = ActorRecord(spec, sender)
        self.actors[rec.actor_id] = rec
        early = self.early.pop(rec.actor_id, None)
        if early is not None:
            for ident in early[1]:
                rec.subscribers.add(ident)
                self.sched.send(ident, self._state_msg(rec))
        if not spec["detached"]:
            self.by_life[A.lifetime_id(rec.actor_id)] = rec.actor_id
        self._event(rec, "actor_created", spec["meta"]["class_name"])
        self._reply(sender, req, True, (rec.actor_id, spec["meta"]))
        self._check_feasible(rec)
        self.pending.append(rec)
        self.place_pending()

    def _check_feasible(self, rec: ActorRecord) -> None:
        demand = rec.spec["demand"]
        nodes = self.sched.nodes
        if not nodes or any(not n.res.missing(demand) for n in nodes.values()):
            return
        text = (f"{rec.label} needs {demand} but no node in the cluster can ever provide "
                f"it; it stays pending until a node with those resources joins")
        self.sched.events.add("actor_infeasible", rec.actor_id, text)
        self.sched.send(rec.owner, (P.WARN, text))

    def place_pending(self) -> None:
        """Place actors waiting for a node (called after every batch the head handles)."""
        if not self.pending:
            return
        waiting: deque[ActorRecord] = deque()
        while self.pending:
            rec = self.pending.popleft()
            if rec.state != A.DEAD and not rec.spawned and not self._place(rec):
                waiting.append(rec)
        self.pending = waiting

    def _place(self, rec: ActorRecord) -> bool:
        demand = rec.spec["demand"]
        hold = rec.spec["hold"]
        best: Node | None = None
        for node in self.sched.nodes.values():
            if not node.alive:
                continue
            if hold:
                if not node.res.can_acquire(demand):
                    continue
            elif node.res.missing(demand):
                continue
            if best is None or self.per_node.get(node.node_id, 0) < self.per_node.get(
                    best.node_id, 0):
                best = node
        if best is None:
            return False
        if hold:
            rec.gpu_ids = best.res.acquire(demand)
            rec.holding = True
        rec.node = best
        rec.incarnation += 1
        rec.spawned = True
        self.per_node[best.node_id] = self.per_node.get(best.node_id, 0) + 1
        self.sched.send(best.ident, (A.ACTOR_SPAWN, rec.actor_id, rec.incarnation, rec.gpu_ids,
                                      rec.spec["meta"]["class_name"]))
        self._event(rec, "actor_spawning", rec.incarnation)
        return True

    def _held(self) -> list[tuple[bytes, dict[str, float]]]:
        return [(rec.node.node_id, rec.spec["demand"]) for rec in self.actors.values()
                if rec.holding and rec.node is not None]

    def _release(self, rec: ActorRecord) -> None:
        node = rec.node
        if node is None:
            return
        if rec.holding:
            node.res.release(rec.spec["demand"], rec.gpu_ids)
            rec.holding = False
            rec.gpu_ids = []
        if rec.spawned:
            rec.spawned = False
            self.per_node[node.node_id] = self.per_node.get(node.node_id, 1) - 1

    # --- the actor process --------------------------------------------------------
    def _on_hello(self, sender: bytes, msg: P.Msg) -> None:
        _, actor_id, inc = msg
        rec = self._current(actor_id, inc)
        if rec is None:
            self.sched.send(sender, (A.ACTOR_INIT, None, None))
            return
        rec.proc = sender
        self.sched.send(sender, (A.ACTOR_INIT, rec.spec, rec.checkpoint, dict(rec.retried)))

    def _on_alive(self, sender: bytes, msg: P.Msg) -> None:
        _, actor_id, inc, addr, pid = msg
        rec = self._current(actor_id, inc)
        if rec is None:
            return
        rec.state = A.ALIVE
        rec.addr = addr
        rec.pid = pid
        rec.cause = None
        self._event(rec, "actor_alive", pid)
        self._notify(rec)

    def _on_init_failed(self, sender: bytes, msg: P.Msg) -> None:
        _, actor_id, inc, loc = msg
        rec = self._current(actor_id, inc)
        if rec is not None:
            rec.no_restart = True
            self._die(rec, loc)

    def _on_retried(self, sender: bytes, msg: P.Msg) -> None:
        _, actor_id, _inc, key = msg
        rec = self.actors.get(actor_id)  # any incarnation: it may come after its death
        if rec is not None and rec.state != A.DEAD:
            if len(rec.retried) >= RETRIED_MAX:  # the oldest calls are long done
                del rec.retried[next(iter(rec.retried))]
            rec.retried[key] = rec.retried.get(key, 0) + 1

    def _on_exiting(self, sender: bytes, msg: P.Msg) -> None:
        _, actor_id, inc, reason = msg
        rec = self._current(actor_id, inc)
        if rec is not None:
            rec.no_restart = True
            rec.exit_reason = reason

    def _on_checkpoint(self, sender: bytes, msg: P.Msg) -> None:
        _, actor_id, inc, loc = msg
        rec = self._current(actor_id, inc)
        if rec is None:
            self.sched.unlink(loc)
            return
        old, rec.checkpoint = rec.checkpoint, loc
        rec.checkpoints += 1
        if old is not None:
            self.sched.unlink(old)

    def _on_node_lost(self, node: Node) -> None:
        """The actors of a lost node died with it (restarted elsewhere if they may)."""
        for rec in list(self.actors.values()):
            if rec.node is node and rec.state != A.DEAD:
                self._on_proc_died(node.ident, (A.ACTOR_PROC_DIED, rec.actor_id,
                                                rec.incarnation, -9))

    def _on_proc_died(self, sender: bytes, msg: P.Msg) -> None:
        _, actor_id, inc, exitcode = msg
        rec = self._current(actor_id, inc)
        if rec is None:
            return
        self._release(rec)
        self._owner_gone(rec)
        label = rec.label
        if rec.exit_reason:
            text = f"{label} exited: {rec.exit_reason}"
        elif rec.killed:
            # Ray's sentence first (programs match on it), then which actor
            text = (f"The actor is dead because it was killed by `ray.kill`: {label} was "
                    f"killed by jray.kill()")
        else:
            text = f"the process of {label} (pid {rec.pid or '?'}) {A.signal_text(exitcode)}"
        restartable = not rec.no_restart and rec.restarts_left != 0
        if not restartable and not rec.exit_reason and not rec.killed:
            text += f"; no restarts left (max_restarts={rec.spec['max_restarts']})"
        cause = error_loc(ActorDiedError(text, exitcode=exitcode))
        if not restartable:
            self._die(rec, cause)
            return
        if rec.restarts_left > 0:
            rec.restarts_left -= 1
        rec.num_restarts += 1
        rec.killed = False
        rec.state = A.RESTARTING
        rec.cause = cause
        rec.addr = ""
        self._event(rec, "actor_restarting", text)
        self._notify(rec)
        self.pending.append(rec)
        self.place_pending()

    # --- lifetimes --------------------------------------------------------------------
    def _on_lifetime_end(self, oid: bytes) -> None:
        """The lifetime object of an actor was collected: every counted handle is gone."""
        actor_id = self.by_life.pop(oid, None)
        rec = self.actors.get(actor_id) if actor_id is not None else None
        if rec is not None and rec.state != A.DEAD:
            self._end(rec, "all handles to it went out of scope")

    def _owner_gone(self, owner: ActorRecord) -> None:
        """The process of ``owner`` died: the actors it created (not detached) die too."""
        for rec in list(self.actors.values()):
            if (rec.spec.get("owner_actor") == owner.actor_id and rec.state != A.DEAD
                    and not rec.spec["detached"]):
                self._end(rec, f"its owner, {owner.label}, died")

    def _end(self, rec: ActorRecord, reason: str) -> None:
        """Stop ``rec`` for good: a live process exits gracefully (after the calls it
        has), a starting one is killed, one not placed yet dies here."""
        rec.no_restart = True
        rec.exit_reason = reason
        self._unname(rec)
        if rec.state == A.ALIVE and rec.proc:
            self.sched.send(rec.proc, (A.ACTOR_SHUTDOWN, reason))
        elif rec.spawned and rec.node is not None:
            self.sched.send(rec.node.ident,
                            (A.ACTOR_SIGNAL, rec.actor_id, rec.incarnation, SIGKILL))
        else:
            self._die(rec, error_loc(ActorDiedError(f"{rec.label} exited: {reason}")))

    def _unname(self, rec: ActorRecord) -> None:
        name = rec.spec["name"]
        key = (rec.spec["namespace"], name or "")
        if name is not None and self.named.get(key) == rec.actor_id:
            del self.named[key]

    def _die(self, rec: ActorRecord, cause: P.Loc) -> None:
        rec.state = A.DEAD
        rec.cause = cause
        rec.addr = ""
        self._release(rec)
        self._unname(rec)
        self.by_life.pop(A.lifetime_id(rec.actor_id), None)
        rec.retried.clear()
        if rec.checkpoint is not None:
            self.sched.unlink(rec.checkpoint)
            rec.checkpoint = None
        self._event(rec, "actor_dead")
        self._notify(rec)

    # --- requests from callers ----------------------------------------------------
    def _on_kill(self, sender: bytes, msg: P.Msg) -> None:
        _, actor_id, no_restart = msg
        rec = self.actors.get(actor_id)
        if rec is None or rec.state == A.DEAD:
            return
        rec.killed = True
        if no_restart:  # its name is free at once, as in Ray (it dies in a moment)
            rec.no_restart = True
            self._unname(rec)
        if rec.spawned and rec.node is not None:
            self.sched.send(rec.node.ident,
                             (A.ACTOR_SIGNAL, actor_id, rec.incarnation, SIGKILL))
        elif no_restart:
            err = ActorDiedError(f"{rec.label} was killed by jray.kill() before it started")
            self._die(rec, error_loc(err))

    def _on_lookup(self, sender: bytes, msg: P.Msg) -> None:
        rec = self.actors.get(msg[1])
        if rec is None:  # not created yet, or never: answered at creation or expiry
            first, who = self.early.setdefault(msg[1], (time.monotonic(), []))
            who.append(sender)
            return
        rec.subscribers.add(sender)
        self.sched.send(sender, self._state_msg(rec))

    def _expire_early(self) -> None:
        """Lookups of actors still unknown after ``EARLY_LOOKUP_S``: they are dead."""
        if not self.early:
            return
        now = time.monotonic()
        for actor_id, (first, who) in list(self.early.items()):
            if now - first < EARLY_LOOKUP_S:
                continue
            del self.early[actor_id]
            err = ActorDiedError(
                f"actor {actor_id.hex()[:12]} is unknown to this cluster. It might be dead "
                f"or it's from a different cluster (its handle comes from another session, "
                f"or the head was restarted)")
            for ident in who:
                self.sched.send(ident, (A.ACTOR_STATE, actor_id, A.DEAD, 1 << 30, "",
                                        error_loc(err)))

    def _on_request(self, sender: bytes, msg: P.Msg) -> None:
        _, req, kind, arg = msg
        if kind == "get_named":
            name, ns = arg
            actor_id = self.named.get((ns, name))
            rec = self.actors.get(actor_id) if actor_id is not None else None
            if rec is None or rec.state == A.DEAD:
                where = f" in namespace {ns!r}" if ns else ""
                self._reply(sender, req, False, f"no actor named {name!r}{where} is alive")
                return
            rec.subscribers.add(sender)
            self._reply(sender, req, True, (rec.actor_id, rec.spec["meta"]))
            self.sched.send(sender, self._state_msg(rec))
        elif kind == "get_by_id":  # an actor's handle to itself (runtime context)
            rec = self.actors.get(arg)
            if rec is None or rec.state == A.DEAD:
                self._reply(sender, req, False, f"actor {arg.hex()[:12]} is not alive")
                return
            rec.subscribers.add(sender)
            self._reply(sender, req, True, (rec.actor_id, rec.spec["meta"]))
            self.sched.send(sender, self._state_msg(rec))
        elif kind == "barrier":  # answered after what the sender sent before it
            self._reply(sender, req, True, None)
        elif kind == "list":
            self._reply(sender, req, True, [self.row(r) for r in self.actors.values()])
        else:
            self._reply(sender, req, False, f"unknown actor request {kind!r}")

    def row(self, rec: ActorRecord) -> dict[str, Any]:
        return {
            "actor_id": rec.actor_id.hex(),
            "class_name": rec.spec["meta"]["class_name"],
            "state": rec.state,
            "name": rec.spec["name"],
            "namespace": rec.spec["namespace"],
            "pid": rec.pid or None,
            "node_id": rec.node.node_id.hex() if rec.node is not None else None,
            "num_restarts": rec.num_restarts,
            "checkpoints": rec.checkpoints,
            "resources": dict(rec.spec["demand"]) if rec.spec["hold"] else {},
            "created": rec.created,
        }

    # --- objects made by actor calls ----------------------------------------------
    def _on_expect(self, sender: bytes, msg: P.Msg) -> None:
        objects = self.sched.objects
        for oid in msg[1]:
            if oid not in objects:
                objects[oid] = Obj(oid, sender, None)

    def _on_results(self, sender: bytes, msg: P.Msg) -> None:
        sched = self.sched
        objects = sched.objects
        for oid, loc, owner, contained in msg[1]:
            obj = objects.get(oid)
            if obj is None:
                obj = objects[oid] = Obj(oid, owner, None)
            if contained:
                sched.contain(obj, contained)
            sched.object_ready(obj, loc, notify_owner=False)

    def _on_calls_failed(self, sender: bytes, msg: P.Msg) -> None:
        objects = self.sched.objects
        for oid, loc in msg[1]:
            obj = objects.get(oid)
            if obj is not None:
                self.sched.object_ready(obj, loc, notify_owner=False)
