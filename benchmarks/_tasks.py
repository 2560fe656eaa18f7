"""Task bodies shared by every peer.

They live in an importable module (not in ``__main__``) so that every peer can
ship them to its workers by reference: Ray and jray via cloudpickle, dask via
its own pickling, and ``concurrent.futures`` via plain pickle. The runner puts
the repository root on ``PYTHONPATH`` so worker processes can import this.
"""

from __future__ import annotations

from collections.abc import Iterator


def noop() -> None:
    """Do nothing; measures pure task overhead."""
    return None


def leaf(i: int) -> int:
    """A tree-reduce leaf: return a small value."""
    return i


def inc(x: int) -> int:
    """One link of a dependency chain."""
    return x + 1


def add(a: int, b: int) -> int:
    """One inner node of a reduction tree."""
    return a + b


def identity(x: object) -> object:
    """Return the argument: a round trip of a value through a task."""
    return x


def count_items(n: int) -> Iterator[int]:
    """A generator task: yields ``n`` small values, each its own object."""
    for i in range(n):  # noqa: UP028 (not ``yield from``: Ray drives it with ``send``)
        yield i


class Actor:
    """Ray's microbenchmark actor: one tiny method."""

    def small_value(self) -> bytes:
        return b"ok"


class AsyncActor:
    """The same, with an ``async def`` method (runs on the actor's event loop)."""

    async def small_value(self) -> bytes:
        return b"ok"


def call_actors(actors: list[object], n: int, module: str) -> int:
    """A task that calls ``actors`` round-robin ``n`` times, then gets every result."""
    import importlib

    api = importlib.import_module(module)  # the peer's own module: jray or ray
    m = len(actors)
    api.get([actors[i % m].small_value.remote() for i in range(n)])  # type: ignore[attr-defined]
    return n


def nested_one_at_a_time(module: str, n: int) -> float:
    """Inside a task: submit a no-op task and get it, ``n`` times; tasks/s seen there.
    ``module`` is the Ray-API module the task runs on (``jray`` or ``ray``)."""
    import importlib
    import time

    mod = importlib.import_module(module)
    child = mod.remote(noop)
    mod.get(child.remote())  # the child's code reaches the workers first
    start = time.perf_counter()
    for _ in range(n):
        mod.get(child.remote())
    return n / (time.perf_counter() - start)


def nested_chain(module: str, n: int) -> float:
    """Inside a task: ``x = inc.remote(x)`` ``n`` times, then get; seconds taken."""
    import importlib
    import time

    mod = importlib.import_module(module)
    link = mod.remote(inc)
    mod.get(link.remote(0))
    start = time.perf_counter()
    x = link.remote(0)
    for _ in range(n - 1):
        x = link.remote(x)
    if mod.get(x) != n:
        raise AssertionError(f"nested chain returned {mod.get(x)}, expected {n}")
    return time.perf_counter() - start
