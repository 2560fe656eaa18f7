"""The kernel side of the JupyterLab panel: a comm target that streams the live views.

::

    panel (TypeScript) ──silent execute: register()──▶ kernel
          ──comm_open("jray.views")──▶ PanelSink ──▶ PUMP (as the inline widgets)
          ◀──full / patch / traceback / no_cluster──

The panel talks to the kernel of the notebook it follows, over the Jupyter
server's authenticated kernel websocket (same origin, no extra port, no
server route). Messages are the same as the inline widget's, so both draw
with ``jray/views/static/views.js``.
"""

from __future__ import annotations

from typing import Any

TARGET = "jray.views"
_registered: set[int] = set()


class PanelSink:
    """One open panel comm, fed by the dashboard pump."""

    def __init__(self, comm: Any) -> None:
        self.comm = comm
        self.joined = False
        self.closed = False
        comm.on_msg(self._on_msg)
        comm.on_close(self._on_close)

    def _on_msg(self, msg: dict[str, Any]) -> None:
        from jray.jupyter.dashboard import on_front_msg

        on_front_msg(self, msg["content"]["data"])

    def _on_close(self, msg: Any) -> None:
        self.closed = True

    def send(self, content: dict[str, Any]) -> None:
        if not self.closed:
            self.comm.send(content)

    def alive(self) -> bool:
        return not self.closed


def _on_open(comm: Any, open_msg: Any) -> None:
    from jray.jupyter.dashboard import PUMP

    PUMP.add(PanelSink(comm))


def register() -> None:
    """Register the comm target (the panel runs this silently in the kernel)."""
    from comm import get_comm_manager

    manager = get_comm_manager()
    if id(manager) in _registered:
        return
    manager.register_target(TARGET, _on_open)
    _registered.add(id(manager))
