"""The driver's flusher thread: what leaves the client when the main thread is busy.

It sends a tight loop's coalesced submissions (``CoreClient._flush_soon`` kicks
it; it waits ``COALESCE_DELAY_S`` for more), settles dropped refs every
``SETTLE_INTERVAL_S`` (so ``del ref`` frees memory even when the driver makes
no further call), and while leased tasks' records wait (``CoreClient.lazy``)
wakes every ``LAZY_S`` to send them; idle leases go back (``lease_client``).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from jray._private.core import CoreClient

COALESCE_DELAY_S = 0.0003
SETTLE_INTERVAL_S = 0.1
#: the longest a leased task's record waits before it goes to the head
LAZY_S = 0.002



def flush_loop(core: CoreClient) -> None:
    """The body of a driver's flusher thread (see the module docstring)."""
    leasing = core.leasing
    last_settle = time.perf_counter()
    while True:
        held = leasing is not None and leasing.ledger.held()
        # wake every LAZY_S only while lazy messages wait (a thread that wakes often
        # costs a tight loop on the main thread its GIL hand-offs)
        kicked = core._kick.wait(LAZY_S if core.lazy_head else SETTLE_INTERVAL_S)
        if core.closed:
            return
        now = time.perf_counter()
        settle = now - last_settle >= SETTLE_INTERVAL_S
        if kicked:
            time.sleep(COALESCE_DELAY_S)
        elif not held and not core.rt.events and not core.pending_free and not core.lazy_head:
            last_settle = now
            continue
        elif not settle and not core.lazy_head:
            continue
        if not kicked and not core.lock.acquire(blocking=settle):
            continue  # the main thread is busy with the client: next turn
        if kicked:
            core.lock.acquire()
        try:
            core._kick.clear()
            if core.closed:
                return
            if (settle or kicked) and core.rt.events:
                core._settle_refs()
            if settle and not kicked:
                last_settle = now
                core.release_pending()
                if leasing is not None and held:
                    leasing.tick()
            core.flush(lazy=True)
        finally:
            core.lock.release()
