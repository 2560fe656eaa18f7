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
