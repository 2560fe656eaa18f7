"""The owner's side of leased workers: ``LeaseLedger`` decisions turned into messages.

``send(spec)`` puts a submitted task on a lease when the ledger has
one for its shape and every top-level argument is already here (their
locations travel with the task, so the worker needs no head) or is made by a
task in flight on that same lease (its location is None: the worker takes it
from the result it made itself, as it runs the lease's tasks in order); the task's
record (``SUBMIT_LEASED``) goes to the head lazily (``CoreClient.lazy``), in
order with everything else this process tells the head. Anything else returns
False and goes through the head as before. Call with the client's lock held.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from jray._private import protocol as P
from jray._private.ledger import LeaseLedger
from jray._private.resources import shape_of

if TYPE_CHECKING:
    from jray._private.core import CoreClient

_now = time.perf_counter
#: how long a task that asks for a lease waits for the head's answer (then it goes
#: through the head; a later task takes the lease)
GRANT_WAIT_S = 0.01


class LeaseClient:
    """Leases of one owner process (a driver)."""

    def __init__(self, core: CoreClient) -> None:
        self.core = core
        self.ledger = LeaseLedger(node_id=core.node_id)
        core.handlers[P.LEASE_GRANT] = self._on_grant
        core.handlers[P.LEASE_REVOKED] = self._on_revoked

    def send(self, spec: P.TaskSpec) -> bool:
        core = self.core
        cache = core.cache
        deps = spec[P.T_DEPS]
        ledger = self.ledger
        after = None
        for oid in deps:
            loc = cache.get(oid)
            if loc is None:  # made by a task in flight on a lease (then go after it there)?
                maker = ledger.lease_making(oid)
                if maker is None or (after is not None and maker is not after):
                    return False  # the head waits for it
                after = maker
            elif loc[0] == P.LOC_ERROR:  # the head fails the task with it
                return False
        demand = spec[P.T_RESOURCES]
        now = _now()
        shape = shape_of(demand)
        lease = ledger.route(shape, demand, now, after)
        if ledger.out:  # the first task of a shape asks for a lease (it leaves at once)
            core.to_head.extend(ledger.take())
            # an owner with nothing else in flight (this task's results are awaited
            # already) waits a moment for the answer; in a burst the task goes on
            if len(core.awaiting) <= len(deps) + len(spec[P.T_RETURNS]):
                core.flush()
                deadline = now + GRANT_WAIT_S
                while shape in ledger.asked and _now() < deadline:
                    core.poll(1)
                lease = ledger.route(shape, demand, _now(), after)
                self._emit()
        if lease is None:
            return False
        returns = spec[P.T_RETURNS]
        fid = spec[P.T_FUNC_ID]
        blob = core.functions_sent[fid] if ledger.sent(lease, returns[0], fid, now) else None
        core.send_owner(lease.addr, (P.EXECUTE, (
            spec[P.T_ID], fid, blob, spec[P.T_NAME], spec[P.T_ARGS],
            [(oid, cache.get(oid)) for oid in deps], returns, spec[P.T_OWNER], lease.gpu_ids,
            spec[P.T_MAX_RETRIES], spec[P.T_RETRY_EXC], spec[P.T_OUTPUT], demand, lease.lease_id,
        )))
        core.lazy((P.SUBMIT_LEASED, spec, lease.lease_id))
        return True

    def result(self, oid: bytes) -> None:
        self.ledger.result(oid, _now())

    def tick(self) -> None:
        """Return idle leases; read results and grants that arrived while nobody polled."""
        core = self.core
        if self.ledger.in_flight() or self.ledger.pending:
            core.poll(0)
        self.ledger.tick(_now())
        self._emit()

    def return_idle(self) -> None:
        """Give back every lease with nothing in flight now (before a resource query:
        what the driver does not use shows as free)."""
        core = self.core
        deadline = _now() + GRANT_WAIT_S * 10
        while self.ledger.pending and _now() < deadline:  # answers on their way: take them
            core.poll(1)
        if self.ledger.in_flight():
            core.poll(0)
        self.ledger.tick(_now(), idle_s=0.0)
        self._emit()

    def _emit(self) -> None:
        if self.ledger.out:
            self.core.to_head.extend(self.ledger.take())

    def _on_grant(self, msg: P.Msg) -> None:
        _, req, lease_id, addr, gpu_ids = msg
        self.ledger.granted(req, lease_id, addr, gpu_ids, _now())
        self._emit()

    def _on_revoked(self, msg: P.Msg) -> None:
        self.ledger.revoked(msg[1], _now())
        self._emit()
