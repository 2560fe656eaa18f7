"""The notebook layer on a Ray cluster: the only module of ``jray.jupyter`` importing Ray.

``%jray init --backend ray`` starts a local Ray instance (``include_dashboard=False``,
a small ``num_cpus`` unless given) and stops it at ``%jray shutdown``;
``--address ADDR`` connects to a running cluster and only disconnects from it.
Cells are Ray tasks, engines Ray actors, the output hub a Ray actor; Ray's own
forwarding of worker output to the driver is off (``log_to_driver=False``), so a
cell's output reaches the notebook only through the hub, under its own cell.

What differs from jray's backend (see ``docs/ray-backend.md``): no hook in
``ray.get`` (a plain ``ray.get`` in a cell shows no bar and an interrupt there
does not cancel its tasks); the live views read Ray's state API
(``ray_events``: polled, and with the DAG's edges only for the tasks the
notebook's cells submitted, which this module records); a
running cell (task or engine) is stopped by a periodic signal in its worker whose
handler checks Ray's cancellation flag (Ray itself interrupts neither a running actor call
nor a task inside a ``time.sleep``); task
counts come from Ray's state API, which needs the dashboard's API server.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

try:
    import ray
except ImportError as e:  # the optional extra is not installed
    raise ImportError("the Ray backend needs Ray: pip install 'jray[ray]'") from e

from jray.jupyter.backends import ray_events
from jray.jupyter.backends.base import Backend, Caps, Runtime
from jray.jupyter.capture import Bundle
from jray.jupyter.engines import Engine
from jray.jupyter.remote_cell import CellSpec

#: CPUs of a local Ray instance started without ``--num-cpus``.
LOCAL_CPUS = 2
#: How often a running cell looks at Ray's cancellation flag.
WATCH_PERIOD_S = 0.1


class RayRuntime(Runtime):
    name = "ray"

    def get(self, refs: Any, timeout: float | None = None) -> Any:
        return ray.get(refs, timeout=timeout)

    def is_ref(self, value: Any) -> bool:
        return isinstance(value, ray.ObjectRef)

    def ref_id(self, ref: Any) -> bytes:
        return bytes(ref.binary())

    @contextmanager
    def cancellable(self) -> Iterator[None]:
        """Make ``ray.cancel`` stop the cell run inside, even in a ``time.sleep``.

        Ray flags a cancelled task (and for a plain task also trips ``SIGINT``'s
        handler, which runs only at the next bytecode: never during a long sleep); the
        flag can be read only from the task's own thread. So a ticker thread sends that
        thread ``SIGALRM`` every ``WATCH_PERIOD_S`` (a signal aimed at the thread, which
        cuts a sleep short there); the handler reads the flag and raises
        ``KeyboardInterrupt`` once it is set."""
        main = threading.main_thread()
        if threading.current_thread() is not main or main.ident is None:
            yield  # Python runs signal handlers in the main thread only
            return
        ctx = ray.get_runtime_context()
        stop = threading.Event()

        def check(signum: int, frame: Any) -> None:
            if not stop.is_set() and ctx.is_canceled():
                stop.set()  # once: the cell's cleanup runs in peace
                raise KeyboardInterrupt

        def tick(ident: int) -> None:
            while not stop.wait(WATCH_PERIOD_S):
                signal.pthread_kill(ident, signal.SIGALRM)

        old = signal.signal(signal.SIGALRM, check)
        ticker = threading.Thread(target=tick, args=(main.ident,), daemon=True,
                                  name="jray-cancel-check")
        ticker.start()
        try:
            yield
        finally:
            stop.set()
            ticker.join()  # no tick may arrive once the old handler is back
            signal.signal(signal.SIGALRM, old)


class CellInterrupted(Exception):
    """An engine cell stopped by an interrupt of the notebook (its namespace stays)."""


class RayEngine(Engine):
    """An engine on Ray: an interrupted cell fails with ``CellInterrupted`` rather than a
    ``KeyboardInterrupt`` escaping the actor's method, so the engine and its state stay."""

    def execute(self, spec: CellSpec, hub: Any) -> Bundle | None:
        try:
            return super().execute(spec, hub)
        except KeyboardInterrupt:
            raise CellInterrupted("the cell was interrupted") from None


def read_state() -> ray_events.Rows:
    """One read of Ray's tables through its state API (the dashboard's API server)."""
    from ray.util.state import list_actors, list_nodes, list_objects, list_tasks

    kw: dict[str, Any] = {"timeout": 5, "raise_on_missing_output": False,
                          "limit": ray_events.LIMIT}
    return {"tasks": [vars(r) for r in list_tasks(detail=True, **kw)],
            "objects": [vars(r) for r in list_objects(**kw)],
            "nodes": [vars(r) for r in list_nodes(**kw)],
            "actors": [vars(r) for r in list_actors(**kw)]}


class RayViews:
    """The live views' data on Ray (``dashboard.source``): a model fed by Ray's tables."""

    def __init__(self, notebook: ray_events.NotebookTasks) -> None:
        self.notebook = notebook
        self.current: Any = None  # jray.views.live.Live over a RaySource
        self.events: ray_events.RayEvents | None = None

    def live(self) -> Any:
        if self.current is None:
            from jray.views.live import Live

            self.events = ray_events.RayEvents(self.notebook, hide=("OutputHub.",))
            self.current = Live(ray_events.RaySource(read_state, self.events))
        return self.current

    def is_initialized(self) -> bool:
        return bool(ray.is_initialized())

    def traceback(self, tid: str) -> str:
        return self.events.traceback(tid) if self.events is not None else ""

    def close(self) -> None:
        if self.current is not None:
            self.current.close()
            self.current = None


class _Recorded:
    """A Ray remote function whose submissions are recorded (inputs, cell) for the views."""

    def __init__(self, fn: Any, backend: RayBackend) -> None:
        self.fn, self.backend = fn, backend

    def options(self, **options: Any) -> _Recorded:
        return _Recorded(self.fn.options(**options), self.backend)

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        refs = self.fn.remote(*args, **kwargs)
        first = refs[0] if isinstance(refs, list) and refs else refs
        if isinstance(first, ray.ObjectRef):
            inputs = [a.hex() for a in (*args, *kwargs.values()) if isinstance(a, ray.ObjectRef)]
            self.backend.notebook.record(first.task_id().hex(), inputs, self.backend.tag)
        return refs


class RayBackend(Backend):
    name = "ray"
    caps = Caps(cell_tags=True, views=True)
    rt = RayRuntime()
    init_errors = (ConnectionError, RuntimeError, TypeError, ValueError)

    def __init__(self) -> None:
        self.notebook = ray_events.NotebookTasks()
        self.tag: tuple[str | None, int] | None = None
        self.views: RayViews | None = None

    def is_initialized(self) -> bool:
        return bool(ray.is_initialized())

    def init(self, address: str | None = None, **options: Any) -> dict[str, Any]:
        if options.get("resources") is not None and not isinstance(options["resources"], dict):
            raise TypeError("init: resources must be a dict of name -> quantity")
        kwargs: dict[str, Any] = {"log_to_driver": False, "configure_logging": False}
        if address:
            unused = sorted(k for k, v in options.items() if v is not None)
            if unused:
                raise ValueError(f"init --address: {', '.join(unused)} cannot be set when "
                                 f"joining a running Ray cluster")
            try:
                ray.init(address=address, **kwargs)
            except ConnectionError as e:
                raise ConnectionError(
                    f"init --address {address}: could not connect to a Ray cluster there "
                    f"({e}); for a cluster with token authentication set RAY_AUTH_MODE=token "
                    f"in the kernel's environment") from None
            self.started = False
        else:
            ray.init(num_cpus=options.get("num_cpus") or LOCAL_CPUS,
                     num_gpus=options.get("num_gpus"), resources=options.get("resources"),
                     object_store_memory=options.get("object_store_memory"), **kwargs)
            self.started = True
        self._use_views()
        return self.info()

    def _use_views(self) -> None:
        """Make the inline view and the JupyterLab panel show this Ray cluster."""
        from jray.jupyter import dashboard

        if self.views is not None:
            self.views.close()
        self.views = dashboard.source = RayViews(self.notebook)

    def info(self) -> dict[str, Any]:
        ctx = ray.get_runtime_context()
        address = getattr(ctx, "gcs_address", None) or ""
        return {"resources": self.cluster_resources(), "address": address}

    def shutdown(self) -> None:
        if self.views is not None:
            from jray.jupyter import dashboard

            self.views.close()
            if dashboard.source is self.views:
                dashboard.source = None
            self.views = None
        ray.shutdown()  # a joined cluster keeps running: this only disconnects
        self.started = False

    def nodes(self) -> list[dict[str, Any]]:
        return list(ray.nodes())

    def cluster_resources(self) -> dict[str, float]:
        return {k: float(v) for k, v in ray.cluster_resources().items()
                if not k.startswith(("node:", "memory", "object_store_memory"))}

    def available_resources(self) -> dict[str, float]:
        return {k: float(v) for k, v in ray.available_resources().items()}

    def task_counts(self) -> dict[str, int]:
        try:
            from ray.util.state import summarize_tasks

            summary = summarize_tasks(timeout=5, raise_on_missing_output=False)
        except Exception as e:  # Ray's state API lives in the dashboard's API server
            raise LookupError(f"Ray's state API did not answer ({type(e).__name__}); "
                              f"it needs the Ray dashboard") from None
        counts: dict[str, int] = {}
        for row in summary.get("cluster", {}).get("summary", {}).values():
            for state, n in row.get("state_counts", {}).items():
                counts[state.lower()] = counts.get(state.lower(), 0) + int(n)
        return counts

    def remote(self, target: Any, **options: Any) -> Any:
        if target is Engine:
            target = RayEngine
        fn = ray.remote(**options)(target) if options else ray.remote(target)
        return fn if isinstance(target, type) else _Recorded(fn, self)

    def wait(self, refs: Sequence[Any], num_returns: int,
             timeout: float | None) -> tuple[list[Any], list[Any]]:
        ready, pending = ray.wait(list(refs), num_returns=num_returns, timeout=timeout)
        return list(ready), list(pending)

    def cancel(self, ref: Any) -> None:
        ray.cancel(ref)

    def kill(self, actor: Any) -> None:
        ray.kill(actor)

    def error_cause(self, err: BaseException) -> BaseException | None:
        cause = getattr(err, "cause", None)
        if isinstance(err, ray.exceptions.TaskCancelledError):
            return None
        return cause if isinstance(cause, BaseException) else None

    def timeout_error(self, message: str) -> BaseException:
        err: BaseException = ray.exceptions.GetTimeoutError(message)
        return err

    def set_task_tag(self, tag: tuple[str | None, int] | None) -> None:
        self.tag = tag  # the tasks the cells submit carry it (recorded, for the views)

    def dashboard(self) -> Any:
        """The inline view of this Ray cluster; a clear error when Ray's state API (its
        dashboard's API server) does not answer."""
        from jray.jupyter import dashboard

        try:
            read_state()
        except Exception as e:
            raise RuntimeError(
                f"the live views on Ray read Ray's state API, which did not answer "
                f"({type(e).__name__}: {e}); it needs Ray's dashboard: install "
                f"'jray[ray]' (ray[default]) and start the cluster with its dashboard"
            ) from None
        if self.views is None:
            self._use_views()
        w = dashboard.Dashboard()
        dashboard.PUMP.add(w)
        return w
