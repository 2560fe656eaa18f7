"""Tags tasks with the notebook cell that submitted them, for the live views.

While a cell runs, jray's ``core.task_tag`` (set through the backend) is
``(cell_id, execution_count)``; every
task submitted meanwhile carries it (the task spec's last field), so the DAG
groups tasks by cell and a click can scroll to the cell. ``cell_id`` is the
front end's id of the cell (JupyterLab and Notebook 7 send it; None elsewhere).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from jray.jupyter.backends.base import Backend

_INSTALLED: set[int] = set()
#: shell id -> the backend its magics run on now (jray's when only the views installed us)
_BACKENDS: dict[int, Callable[[], Backend]] = {}


def _count(shell: Any) -> int:
    # IPython advances execution_count before the pre_run_cell event when it stores history
    return int(getattr(shell.displayhook, "prompt_count", shell.execution_count))


def _jray() -> Backend:
    from jray.jupyter.backends.jray_backend import JrayBackend

    return JrayBackend()


def install(shell: Any, backend: Callable[[], Backend] | None = None) -> None:
    """Register the pre/post cell hooks on ``shell`` (once); ``backend()`` is the one the
    magics run on now (it tags tasks where its ``caps.cell_tags`` says it can)."""
    if shell is None:
        return
    if backend is not None or id(shell) not in _BACKENDS:
        _BACKENDS[id(shell)] = backend or _jray
    if id(shell) in _INSTALLED:
        return
    _INSTALLED.add(id(shell))
    current = _BACKENDS[id(shell)]

    def pre(info: Any) -> None:
        b = _BACKENDS.get(id(shell), current)()
        if b.caps.cell_tags:
            b.set_task_tag((getattr(info, "cell_id", None), _count(shell)))

    def post(result: Any) -> None:
        b = _BACKENDS.get(id(shell), current)()
        if b.caps.cell_tags:
            b.set_task_tag(None)

    shell.events.register("pre_run_cell", pre)
    shell.events.register("post_run_cell", post)
