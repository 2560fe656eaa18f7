"""``tree_reduce``: combine many refs in a tree of tasks.

A flat reduce (``jray.get`` every value into one process, or one task that
takes all refs) moves every value to one place and combines them one after
another. A tree combines ``fanout`` values per task, in parallel, with depth
``log_fanout(n)``, and each combination starts as soon as its own inputs
exist (it is just a DAG of tasks). It wins when combining costs real work or
the values are large (partial sums of arrays, merged histograms, model
averaging); it loses when each combination is trivial and the values are
tiny, where one task that takes all of them does less bookkeeping.

With ``ordered=False`` the reduce pairs whichever values are ready first
(``jray.wait``), so one slow leaf does not hold back the rest; ``fn`` must then
be commutative as well as associative.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from jray._private import api
from jray._private.object_ref import ObjectRef
from jray.remote_function import RemoteFunction


def tree_reduce(
    fn: Callable[..., Any] | RemoteFunction,
    refs: Sequence[ObjectRef],
    fanout: int = 2,
    *,
    ordered: bool = True,
) -> ObjectRef:
    """Reduce ``refs`` with ``fn`` in a tree of tasks; return a ref to the result.

    Parameters
    ----------
    fn: takes 2..``fanout`` values and returns their combination; a plain
        function is made a remote function (1 CPU per combination).
    refs: the leaves (at least one ObjectRef).
    fanout: how many values each combination takes (>= 2).
    ordered: combine neighbours in list order (needs associativity only), or
        combine whatever is ready first (needs commutativity too).
    """
    if isinstance(fanout, bool) or not isinstance(fanout, int) or fanout < 2:
        raise ValueError(f"tree_reduce: fanout must be an int >= 2, got {fanout!r}")
    level = list(refs)
    if not level:
        raise ValueError("tree_reduce: refs is empty; there is nothing to reduce")
    for i, r in enumerate(level):
        if not isinstance(r, ObjectRef):
            raise TypeError(f"tree_reduce: refs[{i}] is a {type(r).__name__}, not an ObjectRef")
    remote = fn if isinstance(fn, RemoteFunction) else RemoteFunction(fn, {})
    if ordered:
        while len(level) > 1:
            level = [
                remote.remote(*level[i : i + fanout]) if len(level[i : i + fanout]) > 1
                else level[i]
                for i in range(0, len(level), fanout)
            ]
        return level[0]
    pending = level
    ready: list[ObjectRef] = []
    while len(pending) + len(ready) > 1:
        if pending:
            done, pending = api.wait(pending, num_returns=1, timeout=None)
            ready.extend(done)
        while len(ready) >= fanout or (ready and len(ready) > 1 and not pending):
            group, ready = ready[:fanout], ready[fanout:]
            pending.append(remote.remote(*group))
    return (ready or pending)[0]
