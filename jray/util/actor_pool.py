"""``ActorPool``: spread work over a fixed set of actors, one call per actor at a time.

Ray's API: ``submit(fn, value)`` runs ``fn(actor, value)`` (which returns an
``ObjectRef``, e.g. ``lambda a, v: a.work.remote(v)``) on an idle actor, or
queues it until one is free; ``get_next`` returns results in submission
order, ``get_next_unordered`` as they finish; ``map`` and ``map_unordered``
submit a whole iterable at once (when called, as in Ray) and return an
iterator over the results. Work submitted before a ``map`` whose result nobody
took is dropped at once (its actor goes back to the pool), as in Ray.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from jray._private import api
from jray._private.object_ref import ObjectRef

Fn = Callable[[Any, Any], Any]


def _key(future: Any) -> Any:
    return tuple(future) if isinstance(future, list) else future


def _first(future: Any) -> ObjectRef:
    ref: ObjectRef = future[0] if isinstance(future, list) else future
    return ref


class ActorPool:
    """A pool of actor handles that takes work as actors become free.

    Parameters
    ----------
    actors: the actor handles to use (each runs one submitted call at a time).
    """

    def __init__(self, actors: Iterable[Any]) -> None:
        self._idle_actors: list[Any] = list(actors)
        self._future_to_actor: dict[Any, tuple[int, Any]] = {}
        self._index_to_future: dict[int, Any] = {}
        self._next_task_index = 0
        self._next_return_index = 0
        self._pending_submits: list[tuple[Fn, Any]] = []

    def map(self, fn: Fn, values: Iterable[Any]) -> Iterator[Any]:
        """Submit ``fn(actor, value)`` for every value now; the iterator returned
        yields the results in order."""
        self._drop_pending()
        for v in values:
            self.submit(fn, v)

        def results() -> Iterator[Any]:
            while self.has_next():
                yield self.get_next()

        return results()

    def map_unordered(self, fn: Fn, values: Iterable[Any]) -> Iterator[Any]:
        """Like ``map``, but the results come as soon as each is ready."""
        self._drop_pending()
        for v in values:
            self.submit(fn, v)

        def results() -> Iterator[Any]:
            while self.has_next():
                yield self.get_next_unordered()

        return results()

    def _drop_pending(self) -> None:
        """Forget earlier work nobody took the results of (not waiting for it)."""
        while self._index_to_future:
            i = min(self._index_to_future)
            future = self._index_to_future.pop(i)
            _, actor = self._future_to_actor.pop(_key(future))
            self._return_actor(actor)  # may start queued work: dropped next turn
        self._next_return_index = self._next_task_index

    def submit(self, fn: Fn, value: Any) -> None:
        """Run ``fn(actor, value)`` on an idle actor, or once one is free."""
        if self._idle_actors:
            actor = self._idle_actors.pop()
            future = fn(actor, value)
            self._future_to_actor[_key(future)] = (self._next_task_index, actor)
            self._index_to_future[self._next_task_index] = future
            self._next_task_index += 1
        else:
            self._pending_submits.append((fn, value))

    def has_next(self) -> bool:
        """Whether any submitted work has a result not yet returned."""
        return bool(self._future_to_actor)

    def get_next(self, timeout: float | None = None, ignore_if_timedout: bool = False) -> Any:
        """The next result in submission order (``TimeoutError`` after ``timeout``).

        With ``ignore_if_timedout``, a result not ready in time is dropped (its
        actor goes back to the pool) before ``TimeoutError`` is raised, as in Ray.
        """
        if not self.has_next():
            raise StopIteration("No more results to get")
        if self._next_return_index >= self._next_task_index:
            raise ValueError("It is not allowed to call get_next() after get_next_unordered().")
        future = self._index_to_future[self._next_return_index]
        timed_out = False
        if timeout is not None:
            ready, _ = api.wait([_first(future)], timeout=timeout)
            if not ready:
                if not ignore_if_timedout:
                    raise TimeoutError(f"ActorPool.get_next: no result within {timeout} s")
                timed_out = True
        del self._index_to_future[self._next_return_index]
        self._next_return_index += 1
        _, actor = self._future_to_actor.pop(_key(future))
        self._return_actor(actor)
        if timed_out:
            raise TimeoutError(f"ActorPool.get_next: no result within {timeout} s; that "
                               f"work was dropped (ignore_if_timedout=True)")
        return api.get(future)

    def get_next_unordered(self, timeout: float | None = None,
                           ignore_if_timedout: bool = False) -> Any:
        """Any next result, whichever finishes first (``TimeoutError`` after ``timeout``)."""
        if not self.has_next():
            raise StopIteration("No more results to get")
        by_first = {_first(f): f for f in self._index_to_future.values()}
        ready, _ = api.wait(list(by_first), num_returns=1, timeout=timeout)
        if not ready:
            if ignore_if_timedout:
                return None
            raise TimeoutError(f"ActorPool.get_next_unordered: no result within {timeout} s")
        future = by_first[ready[0]]
        i, actor = self._future_to_actor.pop(_key(future))
        del self._index_to_future[i]
        self._next_return_index = max(self._next_return_index, i + 1)
        self._return_actor(actor)
        return api.get(future)

    def _return_actor(self, actor: Any) -> None:
        self._idle_actors.append(actor)
        if self._pending_submits:
            self.submit(*self._pending_submits.pop(0))

    def has_free(self) -> bool:
        """Whether an actor is idle and no submission waits for one."""
        return bool(self._idle_actors) and not self._pending_submits

    def pop_idle(self) -> Any | None:
        """Take an idle actor out of the pool (None if none is idle)."""
        return self._idle_actors.pop() if self.has_free() else None

    def push(self, actor: Any) -> None:
        """Add an actor to the pool (it must not be in it already)."""
        busy = [a for _, a in self._future_to_actor.values()]
        if actor in self._idle_actors or actor in busy:
            raise ValueError("Actor already belongs to current ActorPool")
        self._return_actor(actor)
