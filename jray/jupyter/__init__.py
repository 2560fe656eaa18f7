"""The Jupyter layer: ``%load_ext jray`` registers ``%jray`` and ``%%remote``.

Built on jray's public API, plus one core hook (``api.wait_observer``). Modules:
``cell`` (static analysis of a cell), ``remote_cell`` (the task that runs a
cell), ``capture`` (remote output to an ``OutputHub`` actor), ``output``
(publishing it under the launching cell), ``progress`` (waiting, progress bar,
interrupt; also for a ``jray.get`` of many refs, through that hook),
``engines`` (stateful namespaces in actors), ``tracebacks`` (hide jray's frames),
``status`` and ``magics``.
"""

from __future__ import annotations

from typing import Any

_MAGICS: dict[int, Any] = {}


def load_ipython_extension(ip: Any) -> None:
    """Register the magics on ``ip`` (a second load is a no-op)."""
    if id(ip) in _MAGICS:
        return
    from jray._private import api
    from jray.jupyter import tracebacks
    from jray.jupyter.magics import JrayMagics
    from jray.jupyter.progress import get_observer

    magics = JrayMagics(ip)
    magics.own_tb_handler = tracebacks.install(ip)
    ip.register_magics(magics)
    _MAGICS[id(ip)] = magics
    api.wait_observer = get_observer(magics.router)  # jray.get of many refs: a bar
    from jray.jupyter import cell_tags

    cell_tags.install(ip)  # tasks carry their cell, for the live views


def unload_ipython_extension(ip: Any) -> None:
    """Remove the magics and the get hook; stop the output timer and our cluster."""
    magics = _MAGICS.pop(id(ip), None)
    if magics is None:
        return
    from jray._private import api

    api.wait_observer = None
    if magics.own_tb_handler:
        from jray.jupyter import tracebacks

        tracebacks.uninstall(ip)
    magics.close()
    mm = ip.magics_manager
    mm.magics["line"].pop("jray", None)
    mm.magics["cell"].pop("remote", None)
    mm.registry.pop(type(magics).__name__, None)
