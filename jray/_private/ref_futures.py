"""Futures of ObjectRefs: ``ref.future()``, ``await ref``, ``await asyncio.gather(*refs)``.

One waiter thread per process resolves every pending future; nobody blocks a
thread per ref, and no event loop ever blocks. The thread reads the core's
sockets only in short turns (``poll(0)`` with the core lock taken without
waiting, then a sleep outside the lock that backs off from
``POLL_MIN_S`` to ``POLL_MAX_S`` while nothing arrives), so that other threads
(an async actor's loop finishing calls, the driver's main thread) never wait
for it for long. When another thread holds the lock it is usually reading the
same sockets (a blocking ``get``), and objects it receives land in the shared
cache, where the waiter finds them without the lock.

A future's value is decoded in the waiter thread, as ``get`` would (errors
become the future's exception). Ids are subscribed with the head as ``get``
does: at once for objects this process does not own, and after
``SUBSCRIBE_OWNED_AFTER_S`` for those it does (whose owner hears of them
directly). When the session ends, pending futures fail with ``ClusterError``.
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
from typing import Any

from jray._private import protocol as P
from jray._private.core import CoreClient
from jray._private.object_ref import ObjectRef
from jray._private.waiting import SUBSCRIBE_OWNED_AFTER_S
from jray.exceptions import ClusterError

POLL_MIN_S = 0.0001
POLL_MAX_S = 0.005
#: an idle waiter thread checks this often whether its session has ended
IDLE_CHECK_S = 0.5
#: while futures are pending, this often whether the cluster's processes still live
CHECK_ALIVE_S = 0.1

Future = concurrent.futures.Future


class Waiter:
    """Resolves the futures of one ``CoreClient``'s refs from one daemon thread."""

    def __init__(self, core: CoreClient) -> None:
        self.core = core
        self.cond = threading.Condition(threading.Lock())
        self.pending: dict[bytes, list[tuple[ObjectRef, Future[Any]]]] = {}
        self.since: dict[bytes, float] = {}  # oid -> when the waiter first saw it
        self.resubscribed: set[bytes] = set()
        self.thread: threading.Thread | None = None
        self.checked = 0.0  # when check_alive last ran

    def add(self, ref: ObjectRef) -> Future[Any]:
        fut: Future[Any] = Future()
        with self.cond:
            self.pending.setdefault(ref.id, []).append((ref, fut))
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(target=self._run, name="jray-ref-futures",
                                               daemon=True)
                self.thread.start()
            self.cond.notify()
        return fut

    def _run(self) -> None:
        pause = POLL_MIN_S
        while True:
            with self.cond:
                self._prune()
                while not self.pending:
                    if self.core.closed:
                        return
                    self.cond.wait(IDLE_CHECK_S)
                    self._prune()
                oids = list(self.pending)
            cache = self.core.cache
            ready = [oid for oid in oids if oid in cache]
            if not ready:
                try:
                    got = self._poll(oids)
                except BaseException as exc:  # the cluster went away (check_alive)
                    self._fail_all(_ended() if self.core.closed else exc)
                    continue
                if self.core.closed:
                    self._fail_all(_ended())
                    continue
                ready = [oid for oid in oids if oid in cache]
                if got:
                    pause = POLL_MIN_S
            if ready:
                pause = POLL_MIN_S
                for oid in ready:
                    self._resolve(oid)
                continue
            time.sleep(pause)
            pause = min(POLL_MAX_S, pause * 2)

    def _prune(self) -> None:
        """Forget futures that their users cancelled (call with ``cond`` held)."""
        for oid in [o for o, waiters in self.pending.items()
                    if all(f.cancelled() for _, f in waiters)]:
            self._forget(oid)

    def _forget(self, oid: bytes) -> list[tuple[ObjectRef, Future[Any]]]:
        self.since.pop(oid, None)
        self.resubscribed.discard(oid)
        return self.pending.pop(oid, [])

    def _poll(self, oids: list[bytes]) -> bool:
        """One short turn on the core's sockets; True if any message arrived."""
        core = self.core
        if not core.lock.acquire(blocking=False):
            return False
        try:
            if core.closed:
                return False
            if core.rt.events:
                core._settle_refs()
            now = time.monotonic()
            new = [oid for oid in oids if oid not in self.since]
            if new:
                for hook in core.before_wait:
                    hook()
                subscribe = [oid for oid in new
                             if oid not in core.awaiting and oid not in core.cache]
                if subscribe:
                    core.to_head.append((P.SUBSCRIBE, subscribe))
                for oid in new:
                    self.since[oid] = now
            late = [oid for oid in oids if oid not in self.resubscribed
                    and now - self.since[oid] > SUBSCRIBE_OWNED_AFTER_S]
            if late:
                self.resubscribed.update(late)
                core.to_head.append((P.SUBSCRIBE, late))
            core.flush()
            got = core.poll(0)
            if not got and core.check_alive is not None and now - self.checked > CHECK_ALIVE_S:
                self.checked = now
                core.check_alive()
            return got
        finally:
            core.lock.release()

    def _resolve(self, oid: bytes) -> None:
        with self.cond:
            waiters = self._forget(oid)
        if not waiters:
            return
        core = self.core
        value: Any = None
        error: BaseException | None = None
        try:
            loc = core.cache.get(oid)  # not core.get: another thread may hold the lock long
            value = core.decode(oid, loc if loc is not None else core.get([oid], None)[0])
        except BaseException as exc:  # the task's error, ObjectLostError, ...
            error = exc
        for _ref, fut in waiters:
            if not fut.set_running_or_notify_cancel():
                continue
            if error is not None:
                fut.set_exception(error)
            else:
                fut.set_result(value)

    def _fail_all(self, exc: BaseException) -> None:
        with self.cond:
            everything = [self._forget(oid) for oid in list(self.pending)]
        for waiters in everything:
            for _ref, fut in waiters:
                if fut.set_running_or_notify_cancel():
                    fut.set_exception(exc)


def _ended() -> ClusterError:
    return ClusterError("jray.shutdown() ended the session while a future of an ObjectRef "
                        "was pending")


_lock = threading.Lock()
_waiter: Waiter | None = None


def future_of(core: CoreClient, ref: ObjectRef) -> Future[Any]:
    """A ``concurrent.futures.Future`` that ``ref``'s value (or error) completes."""
    global _waiter
    with _lock:
        waiter = _waiter
        if waiter is None or waiter.core is not core:
            waiter = _waiter = Waiter(core)
    return waiter.add(ref)
