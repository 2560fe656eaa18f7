"""The owner's side of leased workers: ``LeaseLedger`` decisions turned into messages.

``send(spec)`` puts a submitted task on a lease when the ledger has
one for its shape and every top-level argument is already here (their
locations travel with the task, so the worker needs no head); the task's
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


class LeaseClient:
    """Leases of one owner process (a driver)."""

    def __init__(self, core: CoreClient) -> None:
        self.core = core
        self.ledger = LeaseLedger()
        core.handlers[P.LEASE_GRANT] = self._on_grant
        core.handlers[P.LEASE_REVOKED] = self._on_revoked

    def send(self, spec: P.TaskSpec) -> bool:
        core = self.core
        cache = core.cache
        deps = spec[P.T_DEPS]
        for oid in deps:
            loc = cache.get(oid)
            if loc is None or loc[0] == P.LOC_ERROR:  # not here yet (or an error): the head
                return False
        ledger = self.ledger
        demand = spec[P.T_RESOURCES]
        now = _now()
        lease = ledger.route(shape_of(demand), demand, now)
        if ledger.out:
            core.to_head.extend(ledger.take())
        if lease is None:
            return False
        returns = spec[P.T_RETURNS]
        fid = spec[P.T_FUNC_ID]
        blob = core.functions_sent[fid] if ledger.sent(lease, returns[0], fid, now) else None
        core.send_owner(lease.addr, (P.EXECUTE, (
            spec[P.T_ID], fid, blob, spec[P.T_NAME], spec[P.T_ARGS],
            [(oid, cache[oid]) for oid in deps], returns, spec[P.T_OWNER], lease.gpu_ids,
            spec[P.T_MAX_RETRIES], spec[P.T_RETRY_EXC], spec[P.T_OUTPUT], lease.lease_id,
        )))
        core.lazy((P.SUBMIT_LEASED, spec, lease.lease_id))
        return True

    def result(self, oid: bytes) -> None:
        self.ledger.result(oid, _now())

    def tick(self) -> None:
        """Return idle leases; read results that arrived while nobody polled."""
        core = self.core
        if self.ledger.in_flight():
            core.poll(0)
        self.ledger.tick(_now())
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
