"""``Queue``: a first-in first-out queue that lives in an actor, usable from anywhere.

Ray's API. The queue's items live in an async actor (an ``asyncio.Queue``),
so a ``get`` that blocks does not stop ``put`` from other processes. Pass the
``Queue`` object to tasks and actors like any value; every holder talks to
the same actor. ``put``/``get`` block by default (``timeout`` in seconds) and
raise ``Full``/``Empty`` when they give up, like ``queue.Queue``.
"""

from __future__ import annotations

import asyncio
import queue as _queue
from typing import Any

from jray._private import api
from jray.actor import ActorClass, ActorHandle, kill


class Empty(_queue.Empty):
    """``get`` found no item (non-blocking, or after its timeout)."""


class Full(_queue.Full):
    """``put`` found no room (non-blocking, or after its timeout)."""


class _QueueActor:
    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self.queue: asyncio.Queue[Any] = asyncio.Queue(maxsize)

    def qsize(self) -> int:
        return self.queue.qsize()

    def empty(self) -> bool:
        return self.queue.empty()

    def full(self) -> bool:
        return self.queue.full()

    async def put(self, item: Any, timeout: float | None = None) -> None:
        try:
            await asyncio.wait_for(self.queue.put(item), timeout)
        except asyncio.TimeoutError:
            raise Full from None

    async def get(self, timeout: float | None = None) -> Any:
        try:
            return await asyncio.wait_for(self.queue.get(), timeout)
        except asyncio.TimeoutError:
            raise Empty from None

    def put_nowait(self, item: Any) -> None:
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            raise Full from None

    def put_nowait_batch(self, items: list[Any]) -> None:
        if self.maxsize > 0 and len(items) + self.queue.qsize() > self.maxsize:
            raise Full(f"cannot add {len(items)} items to a queue of maxsize {self.maxsize} "
                       f"holding {self.queue.qsize()}")
        for item in items:
            self.queue.put_nowait(item)

    def get_nowait(self) -> Any:
        try:
            return self.queue.get_nowait()
        except asyncio.QueueEmpty:
            raise Empty from None

    def get_nowait_batch(self, num_items: int) -> list[Any]:
        if num_items > self.queue.qsize():
            raise Empty(f"cannot get {num_items} items from a queue holding "
                        f"{self.queue.qsize()}")
        return [self.queue.get_nowait() for _ in range(num_items)]


class Queue:
    """A FIFO queue backed by an actor.

    Parameters
    ----------
    maxsize: the most items it holds (0: unbounded).
    actor_options: options of the backing actor (``num_cpus``, ``name``, ...).
    """

    def __init__(self, maxsize: int = 0, actor_options: dict[str, Any] | None = None) -> None:
        if isinstance(maxsize, bool) or not isinstance(maxsize, int) or maxsize < 0:
            raise ValueError(f"Queue: maxsize must be an int >= 0, got {maxsize!r}")
        self.maxsize = maxsize
        cls = ActorClass(_QueueActor, {})
        self.actor: ActorHandle = cls.options(**(actor_options or {})).remote(maxsize)

    def __len__(self) -> int:
        return self.size()

    def size(self) -> int:
        """The number of items in the queue now."""
        n: int = api.get(self.actor.qsize.remote())
        return n

    qsize = size

    def empty(self) -> bool:
        return bool(api.get(self.actor.empty.remote()))

    def full(self) -> bool:
        return bool(api.get(self.actor.full.remote()))

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        """Add ``item``; wait for room if ``block`` (up to ``timeout`` s), else raise ``Full``."""
        if not block:
            self.put_nowait(item)
            return
        if timeout is not None and timeout < 0:
            raise ValueError("'timeout' must be a non-negative number")
        try:
            api.get(self.actor.put.remote(item, timeout))
        except Full:
            raise Full(f"Queue.put: no room within {timeout} s") from None

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        """Remove and return an item; wait if ``block`` (up to ``timeout`` s), else ``Empty``."""
        if not block:
            return self.get_nowait()
        if timeout is not None and timeout < 0:
            raise ValueError("'timeout' must be a non-negative number")
        try:
            return api.get(self.actor.get.remote(timeout))
        except Empty:
            raise Empty(f"Queue.get: no item within {timeout} s") from None

    async def put_async(self, item: Any, block: bool = True,
                        timeout: float | None = None) -> None:
        """``put`` for async code: awaits room without blocking the event loop."""
        if timeout is not None and timeout < 0:
            raise ValueError("'timeout' must be a non-negative number")
        try:
            if not block:
                await self.actor.put_nowait.remote(item)
            else:
                await self.actor.put.remote(item, timeout)
        except Full:
            raise Full(f"Queue.put_async: no room (block={block}, timeout={timeout})") from None

    async def get_async(self, block: bool = True, timeout: float | None = None) -> Any:
        """``get`` for async code: awaits an item without blocking the event loop."""
        if timeout is not None and timeout < 0:
            raise ValueError("'timeout' must be a non-negative number")
        try:
            if not block:
                return await self.actor.get_nowait.remote()
            return await self.actor.get.remote(timeout)
        except Empty:
            raise Empty(f"Queue.get_async: no item (block={block}, timeout={timeout})") from None

    def put_nowait(self, item: Any) -> None:
        try:
            api.get(self.actor.put_nowait.remote(item))
        except Full:
            raise Full("Queue.put_nowait: the queue is full") from None

    def put_nowait_batch(self, items: list[Any]) -> None:
        if not isinstance(items, list):
            raise TypeError("put_nowait_batch takes a list of items")
        try:
            api.get(self.actor.put_nowait_batch.remote(items))
        except Full as exc:
            raise Full(str(exc.args[0]) if exc.args else "the queue is full") from None

    def get_nowait(self) -> Any:
        try:
            return api.get(self.actor.get_nowait.remote())
        except Empty:
            raise Empty("Queue.get_nowait: the queue is empty") from None

    def get_nowait_batch(self, num_items: int) -> list[Any]:
        if isinstance(num_items, bool) or not isinstance(num_items, int) or num_items < 0:
            raise ValueError(f"num_items must be an int >= 0, got {num_items!r}")
        try:
            items: list[Any] = api.get(self.actor.get_nowait_batch.remote(num_items))
        except Empty:
            raise Empty(f"Queue.get_nowait_batch: fewer than {num_items} items") from None
        return items

    def shutdown(self, force: bool = False, grace_period_s: int = 5) -> None:
        """Stop the backing actor (its items are lost)."""
        if self.actor is not None:
            kill(self.actor)
