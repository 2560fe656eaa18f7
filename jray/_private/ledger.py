"""The owner's bookkeeping of leased workers, as a state machine without I/O.

An owner (the driver) that submits a task asks the head for a *lease*: a
worker that holds one resource shape's resources for this owner alone. While
it holds one, tasks of that shape whose arguments it already has go straight
to that worker (one hop instead of two through the head). ``LeaseLedger``
decides, for each task, whether it goes on a lease or through the head, and
says which messages the owner must send; the client (``lease_client``) does
the I/O. Events go in as method calls, instructions come out of ``take()``:

- ``route(shape, demand, now, after)``: a lease to send the task on, or None
  (then the task goes to the head; the first one of a shape also asks for a
  lease). ``after``: the lease whose tasks in flight make the inputs this task
  still waits for; it goes on that lease whatever its depth (the worker runs a
  lease's tasks in order, so a chain loses no parallelism there);
- ``lease_making(oid)``: the lease of the task in flight that makes ``oid``;
- ``sent(lease, result_id, func_id, now)``: the task left on the lease; says
  whether its code must travel with it (once per function and lease);
- ``result(oid, now)``: a result arrived (ends that task's time in flight);
- ``granted(request, lease_id, addr, gpu_ids, now)``: the head's answer;
- ``revoked(lease_id, now)``: the head took the lease back;
- ``tick(now)``: leases unused for ``idle_s`` go back to the head.

Instructions are protocol messages for the head: ``LEASE_REQUEST`` and
``LEASE_RETURN``. Nothing here retries a task: what was sent on a lease that is
revoked is the head's to finish (it knows every task and reruns them).
"""

from __future__ import annotations

from typing import Generic, TypeVar

from jray._private import protocol as P
from jray._private.resources import Demand, Shape

#: independent tasks in flight on one lease at most: more go through the head, which
#: spreads them over every worker (the owner does not poll inside a burst of submits)
LEASE_DEPTH = 1
#: a lease with nothing in flight for this long goes back to the head
LEASE_IDLE_S = 0.2
#: after a refusal or a revocation, the next request waits this long
LEASE_RETRY_S = 0.05


T = TypeVar("T")


class Ledger(Generic[T]):
    """What the caller-side ledgers share (this one for leased tasks, ``call_ledger``
    for actor calls): events are method calls that touch no socket, clock or
    thread; the instructions they produce collect in ``out`` until ``take()``."""

    def __init__(self) -> None:
        self.out: list[T] = []

    def take(self) -> list[T]:
        out, self.out = self.out, []
        return out


class Lease:
    """One lease this owner holds."""

    __slots__ = ("lease_id", "shape", "addr", "gpu_ids", "inflight", "funcs", "last_used")

    def __init__(self, lease_id: bytes, shape: Shape, addr: str, gpu_ids: list[int],
                 now: float) -> None:
        self.lease_id = lease_id
        self.shape = shape
        self.addr = addr
        self.gpu_ids = gpu_ids
        #: the first result id of each task in flight on it
        self.inflight: set[bytes] = set()
        #: functions whose code this lease's worker was sent
        self.funcs: set[bytes] = set()
        self.last_used = now


class LeaseLedger(Ledger[P.Msg]):
    """Which tasks go on which lease, and when leases are asked for and returned."""

    def __init__(self, depth: int = LEASE_DEPTH, idle_s: float = LEASE_IDLE_S,
                 retry_s: float = LEASE_RETRY_S, node_id: bytes = b"") -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"LeaseLedger: depth must be at least 1, got {depth!r}")
        self.depth = depth
        self.idle_s = idle_s
        self.retry_s = retry_s
        #: the owner's node, sent with each request: the head grants there first
        self.node_id = node_id
        self.by_shape: dict[Shape, Lease] = {}
        self.by_id: dict[bytes, Lease] = {}
        #: request id -> the shape it asks for
        self.pending: dict[int, Shape] = {}
        self.asked: set[Shape] = set()
        self.not_before: dict[Shape, float] = {}
        self.by_result: dict[bytes, Lease] = {}
        self._req = 0

    # --- events -------------------------------------------------------------------
    def route(self, shape: Shape, demand: Demand, now: float,
              after: Lease | None = None) -> Lease | None:
        lease = self.by_shape.get(shape)
        if after is not None:
            return after if after is lease else None
        if lease is not None:
            return lease if len(lease.inflight) < self.depth else None
        if shape not in self.asked and now >= self.not_before.get(shape, 0.0):
            self._req += 1
            self.pending[self._req] = shape
            self.asked.add(shape)
            self.out.append((P.LEASE_REQUEST, self._req, dict(demand), self.node_id))
        return None

    def sent(self, lease: Lease, result_id: bytes, func_id: bytes, now: float) -> bool:
        lease.inflight.add(result_id)
        lease.last_used = now
        self.by_result[result_id] = lease
        if func_id in lease.funcs:
            return False
        lease.funcs.add(func_id)
        return True

    def lease_making(self, oid: bytes) -> Lease | None:
        tid = P.task_of(oid)
        return None if tid is None else self.by_result.get(P.return_id(tid, 0))

    def result(self, oid: bytes, now: float) -> None:
        lease = self.by_result.pop(oid, None)
        if lease is not None:
            lease.inflight.discard(oid)
            lease.last_used = now

    def granted(self, request: int, lease_id: bytes | None, addr: str, gpu_ids: list[int],
                now: float) -> None:
        shape = self.pending.pop(request, None)
        if shape is None:  # not a request of ours: give it back
            if lease_id is not None:
                self.out.append((P.LEASE_RETURN, lease_id))
            return
        self.asked.discard(shape)
        if lease_id is None:
            self.not_before[shape] = now + self.retry_s
            return
        if shape in self.by_shape:
            self.out.append((P.LEASE_RETURN, lease_id))
            return
        lease = Lease(lease_id, shape, addr, list(gpu_ids), now)
        self.by_shape[shape] = lease
        self.by_id[lease_id] = lease

    def revoked(self, lease_id: bytes, now: float) -> None:
        lease = self.by_id.pop(lease_id, None)
        self.out.append((P.LEASE_RETURN, lease_id))  # the head forgets it on this ack
        if lease is None:
            return
        self._drop(lease)
        self.not_before[lease.shape] = now + self.retry_s

    def tick(self, now: float, idle_s: float | None = None) -> None:
        """Return the leases unused for ``idle_s`` (default: the ledger's)."""
        idle = self.idle_s if idle_s is None else idle_s
        for lease in list(self.by_id.values()):
            if not lease.inflight and now - lease.last_used >= idle:
                del self.by_id[lease.lease_id]
                self._drop(lease)
                self.out.append((P.LEASE_RETURN, lease.lease_id))

    def release_all(self) -> None:
        """Give every lease back (the owner stops submitting)."""
        for lease in list(self.by_id.values()):
            self._drop(lease)
            self.out.append((P.LEASE_RETURN, lease.lease_id))
        self.by_id.clear()

    # --- queries ------------------------------------------------------------------
    def held(self) -> bool:
        return bool(self.by_id) or bool(self.pending)

    def in_flight(self) -> int:
        return len(self.by_result)

    def _drop(self, lease: Lease) -> None:
        if self.by_shape.get(lease.shape) is lease:
            del self.by_shape[lease.shape]
        for oid in lease.inflight:
            self.by_result.pop(oid, None)
        lease.inflight.clear()
