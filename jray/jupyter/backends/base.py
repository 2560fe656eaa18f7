"""The interface between the notebook layer and a runtime that runs its cells.

The magics talk to a ``Backend`` (kernel side) only; the code that runs remotely
(a cell's task, an engine, the output capture) talks to a ``Runtime``, a small
picklable object the backend hands out and that travels with each cell. Three
backends implement them: ``jray_backend`` (jray's own cluster), ``ray_backend``
(a Ray cluster, imported only when chosen) and ``fake`` (synchronous, in this
process: the magics' logic under test without processes).

A backend's refs, remote functions and actor handles are its runtime's own
objects; the notebook layer never looks inside them except through the
methods here (``is_ref``, ``ref_id``). ``Caps`` says what a backend can do
beyond the core: the layer asks it rather than the backend's name.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Caps:
    """What a backend supports beyond running cells, engines and output."""

    get_hook: bool = False  # a plain ``get`` in a cell can show a bar and be interrupted
    cell_tags: bool = False  # tasks carry the cell that submitted them (for the views)
    views: bool = False  # ``%jray dashboard``: the live DAG and object-store view
    store_summary: bool = False  # per-node object-store use for ``%jray status``
    interrupt_running_actor_call: bool = True  # cancel stops an engine cell mid-run


class Runtime:
    """The remote side's view of its runtime: fetch values, recognise refs."""

    name = "abstract"

    def get(self, refs: Any, timeout: float | None = None) -> Any:
        raise NotImplementedError

    def is_ref(self, value: Any) -> bool:
        raise NotImplementedError

    def ref_id(self, ref: Any) -> bytes:
        raise NotImplementedError

    def nested_output(self, add: Callable[[tuple[str, str]], None]
                      ) -> AbstractContextManager[None]:
        """Around a running cell: send what the tasks it starts print to ``add((stream,
        text))``, in order with the cell's own output (nothing to do where the runtime
        cannot route it; their output then goes wherever the runtime sends it)."""
        return nullcontext()

    def cancellable(self) -> AbstractContextManager[None]:
        """Around a running cell: what makes the runtime's cancel stop it (nothing to do
        where cancelling interrupts the task itself)."""
        return nullcontext()


class Backend:
    """Kernel side: a cluster to start or join, and the operations the magics need."""

    name = "abstract"
    caps = Caps()
    rt: Runtime = Runtime()
    #: Exceptions an ``init`` with bad arguments or an unreachable cluster raises.
    init_errors: tuple[type[BaseException], ...] = (TypeError, ValueError)
    #: Whether this backend started the cluster it runs on (so shutdown may stop it).
    started = False

    # --- the cluster ---------------------------------------------------------------
    def is_initialized(self) -> bool:
        raise NotImplementedError

    def init(self, address: str | None = None, **options: Any) -> dict[str, Any]:
        """Start a cluster (or connect to ``address``); ``resources`` and ``address``."""
        raise NotImplementedError

    def info(self) -> dict[str, Any]:
        """The running cluster's ``resources`` and ``address``."""
        raise NotImplementedError

    def shutdown(self) -> None:
        raise NotImplementedError

    def nodes(self) -> list[dict[str, Any]]:
        """Rows as Ray's ``nodes()`` gives them (``NodeID``, ``Alive``, ``Resources`` ...)."""
        raise NotImplementedError

    def cluster_resources(self) -> dict[str, float]:
        raise NotImplementedError

    def available_resources(self) -> dict[str, float]:
        raise NotImplementedError

    def task_counts(self) -> dict[str, int]:
        """The cluster's tasks by state (lower-case state names); ``LookupError`` saying
        why when the backend cannot tell."""
        raise NotImplementedError

    def store_rows(self) -> list[str]:
        """One line per node's object store (empty when the backend cannot say)."""
        return []

    # --- tasks, actors and refs ------------------------------------------------------
    def remote(self, target: Any, **options: Any) -> Any:
        """A remote function or actor class of ``target`` (options applied if given)."""
        raise NotImplementedError

    def get(self, refs: Any, timeout: float | None = None) -> Any:
        return self.rt.get(refs, timeout)

    def wait(self, refs: Sequence[Any], num_returns: int,
             timeout: float | None) -> tuple[list[Any], list[Any]]:
        raise NotImplementedError

    def cancel(self, ref: Any) -> None:
        raise NotImplementedError

    def kill(self, actor: Any) -> None:
        raise NotImplementedError

    def is_ref(self, value: Any) -> bool:
        return self.rt.is_ref(value)

    def ref_id(self, ref: Any) -> bytes:
        return self.rt.ref_id(ref)

    def error_cause(self, err: BaseException) -> BaseException | None:
        """The user's exception inside a task error ``get`` raised (None if there is none)."""
        cause = getattr(err, "cause", None)
        return cause if isinstance(cause, BaseException) else None

    def timeout_error(self, message: str) -> BaseException:
        """The error a ``get`` that timed out raises in this runtime."""
        return TimeoutError(message)

    # --- hooks (only where ``caps`` says so) -------------------------------------------
    def set_get_hook(self, hook: Callable[[Sequence[Any], float | None], None] | None) -> None:
        """Install ``hook`` to run before a ``get`` in the kernel waits (``caps.get_hook``)."""

    def set_task_tag(self, tag: tuple[str | None, int] | None) -> None:
        """Tag the tasks submitted from now on with a cell (``caps.cell_tags``)."""

    def dashboard(self) -> Any:
        raise NotImplementedError(f"the live views are not available on the {self.name} "
                                  f"backend")
