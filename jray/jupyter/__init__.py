"""The Jupyter layer: ``%load_ext jray`` registers ``%jray`` and ``%%remote``.

Built on jray's public API only. Modules: ``cell`` (static analysis of a cell),
``remote_cell`` (the task that runs a cell), ``capture`` (remote output to an
``OutputHub`` actor), ``output`` (publishing it under the launching cell),
``progress`` (waiting, progress bar, interrupt), ``engines`` (stateful
namespaces in actors), ``status`` and ``magics``.
"""

from __future__ import annotations

from typing import Any

_MAGICS: dict[int, Any] = {}


def load_ipython_extension(ip: Any) -> None:
    """Register the magics on ``ip`` (a second load is a no-op)."""
    if id(ip) in _MAGICS:
        return
    from jray.jupyter.magics import JrayMagics

    magics = JrayMagics(ip)
    ip.register_magics(magics)
    _MAGICS[id(ip)] = magics


def unload_ipython_extension(ip: Any) -> None:
    """Remove the magics; stop the output timer and a cluster the extension started."""
    magics = _MAGICS.pop(id(ip), None)
    if magics is None:
        return
    magics.close()
    mm = ip.magics_manager
    mm.magics["line"].pop("jray", None)
    mm.magics["cell"].pop("remote", None)
    mm.registry.pop(type(magics).__name__, None)
