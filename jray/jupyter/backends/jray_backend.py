"""The notebook layer on jray's own cluster (the default backend).

Every call is jray's public API, plus two jray-only hooks the capability
flags announce: ``api.wait_observer`` (a ``jray.get`` in a cell shows a bar
and is interrupted cleanly) and ``core.task_tag`` (tasks carry their cell,
for the live views); and ``cancel`` is ``api.interrupt``, which also stops a
running engine (actor) call, as a notebook interrupt must.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import jray
from jray.jupyter.backends.base import Backend, Caps, Runtime


class JrayRuntime(Runtime):
    name = "jray"

    def get(self, refs: Any, timeout: float | None = None) -> Any:
        return jray.get(refs, timeout=timeout)

    def is_ref(self, value: Any) -> bool:
        return isinstance(value, jray.ObjectRef)

    def ref_id(self, ref: Any) -> bytes:
        return bytes(ref.id)

    @contextmanager
    def nested_output(self, add: Callable[[tuple[str, str]], None]) -> Iterator[None]:
        """Tasks the cell starts send their output to this worker's own socket, the one
        their results come by (so a child's lines arrive before its result, in one
        ordered stream), and it joins the cell's output here; outside a worker, nothing.

        Output that comes once the cell has ended (a task it never waited for) goes on
        to the driver, as any nested task's output does (``CoreClient.forward_output``)."""
        from jray._private import api
        from jray._private import protocol as P

        core = api._Session.client
        if core is None or not core.is_worker:
            yield
            return

        def to_cell(msg: P.Msg) -> None:
            _, _tid, name, pid, stream, text = msg
            add((stream, "".join(f"({name} pid={pid}) {line}\n"
                                 for line in text.splitlines())))

        saved, saved_handler = core.output_addr, core.handlers.get(P.TASK_OUTPUT)
        core.output_addr = core.addr
        core.handlers[P.TASK_OUTPUT] = to_cell
        try:
            yield
        finally:
            if saved_handler is None:
                del core.handlers[P.TASK_OUTPUT]
            else:
                core.handlers[P.TASK_OUTPUT] = saved_handler
            core.output_addr = saved


class JrayBackend(Backend):
    name = "jray"
    caps = Caps(get_hook=True, cell_tags=True, views=True, store_summary=True)
    rt = JrayRuntime()
    init_errors = (jray.exceptions.JrayError, TypeError, ValueError)

    def is_initialized(self) -> bool:
        return jray.is_initialized()

    def init(self, address: str | None = None, **options: Any) -> dict[str, Any]:
        info: dict[str, Any] = jray.init(address, **options)
        self.started = not info.get("connected")  # a joined cluster is never stopped here
        return info

    def info(self) -> dict[str, Any]:
        info: dict[str, Any] = jray.init(ignore_reinit_error=True)
        return info

    def shutdown(self) -> None:
        jray.shutdown()
        self.started = False

    def nodes(self) -> list[dict[str, Any]]:
        return jray.nodes()

    def cluster_resources(self) -> dict[str, float]:
        return jray.cluster_resources()

    def available_resources(self) -> dict[str, float]:
        return jray.available_resources()

    def task_counts(self) -> dict[str, int]:
        import jray.state

        return dict(jray.state.summary().get("tasks", {}))

    def store_rows(self) -> list[str]:
        import jray.state

        objects = jray.state.summary().get("objects", 0)
        mib = 1 << 20
        return [f"{node_id}: {s['used'] / mib:,.1f} MiB / {s['capacity'] / mib:,.1f} MiB used, "
                f"{s['spilled_bytes'] / mib:,.1f} MiB spilled, {objects} objects"
                for node_id, s in jray.state.store_summary().items()]

    def remote(self, target: Any, **options: Any) -> Any:
        return jray.remote(**options)(target) if options else jray.remote(target)

    def wait(self, refs: Sequence[Any], num_returns: int,
             timeout: float | None) -> tuple[list[Any], list[Any]]:
        ready, pending = jray.wait(list(refs), num_returns=num_returns, timeout=timeout)
        return list(ready), list(pending)

    def cancel(self, ref: Any) -> None:
        """An interrupted cell stops its code: a task is cancelled, an engine's call
        (an actor call, which ``jray.cancel`` does not interrupt, as in Ray) is
        interrupted (``api.interrupt``)."""
        from jray._private import api

        api.interrupt(ref)

    def kill(self, actor: Any) -> None:
        jray.kill(actor)

    def timeout_error(self, message: str) -> BaseException:
        return jray.exceptions.GetTimeoutError(message)

    def set_get_hook(self, hook: Callable[[Sequence[Any], float | None], None] | None) -> None:
        from jray._private import api

        api.wait_observer = hook

    def set_task_tag(self, tag: tuple[str | None, int] | None) -> None:
        from jray._private import core

        core.task_tag = tag

    def dashboard(self) -> Any:
        return jray.dashboard()
