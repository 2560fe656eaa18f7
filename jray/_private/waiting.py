"""Waiting for objects inside ``CoreClient`` (``get``, ``wait``, a lost segment):
subscribe, poll, tell the head a worker is blocked, and let the other threads of a
threaded or async actor use the client during quiet turns."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from jray._private import protocol as P
from jray._private.debug import HIDE
from jray._private.flusher import LAZY_S
from jray.exceptions import GetTimeoutError

if TYPE_CHECKING:
    from jray._private.core import CoreClient

#: a get that has waited this long subscribes to the objects this process owns too
SUBSCRIBE_OWNED_AFTER_S = 0.5
#: how long a waiting worker thread lets go of the client after a quiet poll (threaded
#: and async actors: their other calls submit, finish and wait meanwhile)
YIELD_S = 0.001


def await_objects(core: CoreClient, missing: list[bytes], need: int, timeout: float | None,
                  stop_on_error: bool = False) -> None:
    """Wait until ``need`` of ``missing`` are in ``core.cache`` (the caller holds the
    client's lock); a worker tells the head it is blocked meanwhile; with
    ``stop_on_error``, return as soon as one of them is an error."""
    __tracebackhide__ = HIDE  # noqa: F841  (read by IPython and pytest)
    deadline = None if timeout is None else time.monotonic() + timeout
    for hook in core.before_wait:
        hook()
    to_sub = [oid for oid in missing if oid not in core.awaiting]
    if to_sub:
        core.to_head.append((P.SUBSCRIBE, to_sub))
    subscribed_owned = False
    start = time.monotonic()
    try:
        while True:
            core.flush(lazy=True)
            cache = core.cache
            left = [oid for oid in missing if oid not in cache]
            need -= len(missing) - len(left)
            if need <= 0:
                return
            if stop_on_error and len(left) < len(missing) and any(
                    cache[oid][0] == P.LOC_ERROR for oid in missing if oid in cache):
                return
            missing = left
            if core.is_worker and not core.blocked:
                core.blocked = True
                queued = core.on_block() if core.on_block is not None else []
                core.to_head.append((P.BLOCKED, queued))
                core.flush()
            now = time.monotonic()
            if not subscribed_owned and now - start > SUBSCRIBE_OWNED_AFTER_S:
                subscribed_owned = True
                core.to_head.append((P.SUBSCRIBE, missing))
                core.flush()
            wait_ms = 100 if not core.lazy_head else 1 + int(LAZY_S * 1000)
            if deadline is not None:
                if now >= deadline:
                    first = missing[0].hex()
                    raise GetTimeoutError(
                        f"get timed out after {timeout} s: {len(missing)} object(s) not "
                        f"ready, e.g. ObjectRef({first})"
                    )
                wait_ms = min(wait_ms, max(1, int((deadline - now) * 1000)))
            if not core.poll(wait_ms):
                if core.check_alive is not None:
                    core.check_alive()
                if core.is_worker:  # a quiet turn: let the other threads of a threaded
                    let_others_in(core)  # or async actor use the client meanwhile
    finally:
        if core.blocked:
            core.blocked = False
            core.to_head.append((P.UNBLOCKED,))
            core.flush()


def let_others_in(core: CoreClient) -> None:
    """Release the lock (however deep this thread holds it) for a moment."""
    held = core.lock._release_save()  # type: ignore[attr-defined]
    try:
        time.sleep(YIELD_S)
    finally:
        core.lock._acquire_restore(held)  # type: ignore[attr-defined]
