"""Tags tasks with the notebook cell that submitted them, for the live views.

While a cell runs, ``core.task_tag`` is ``(cell_id, execution_count)``; every
task submitted meanwhile carries it (the task spec's last field), so the DAG
groups tasks by cell and a click can scroll to the cell. ``cell_id`` is the
front end's id of the cell (JupyterLab and Notebook 7 send it; None elsewhere).
"""

from __future__ import annotations

from typing import Any

from jray._private import core

_INSTALLED: set[int] = set()


def _count(shell: Any) -> int:
    # IPython advances execution_count before the pre_run_cell event when it stores history
    return int(getattr(shell.displayhook, "prompt_count", shell.execution_count))


def install(shell: Any) -> None:
    """Register the pre/post cell hooks on ``shell`` (once)."""
    if shell is None or id(shell) in _INSTALLED:
        return
    _INSTALLED.add(id(shell))

    def pre(info: Any) -> None:
        core.task_tag = (getattr(info, "cell_id", None), _count(shell))

    def post(result: Any) -> None:
        core.task_tag = None

    shell.events.register("pre_run_cell", pre)
    shell.events.register("post_run_cell", post)
