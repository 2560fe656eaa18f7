"""The Jupyter layer: ``%load_ext jray`` registers ``%jray`` and ``%%remote``.

It runs on a backend (``backends``): jray's own cluster by default, or Ray
(``%jray init --backend ray [--address ADDR]``, or ``jray.jupyter.init(...)``
from Python). Modules:
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
    from jray.jupyter import tracebacks
    from jray.jupyter.magics import JrayMagics
    from jray.jupyter.progress import get_observer

    magics = JrayMagics(ip)
    magics.own_tb_handler = tracebacks.install(ip)
    ip.register_magics(magics)
    _MAGICS[id(ip)] = magics
    magics.get_hook = get_observer(magics.router)  # jray.get of many refs: a bar
    if magics.backend.caps.get_hook:
        magics.backend.set_get_hook(magics.get_hook)
    from jray.jupyter import cell_tags

    cell_tags.install(ip, lambda: magics.backend)  # tasks carry their cell, for the views


def unload_ipython_extension(ip: Any) -> None:
    """Remove the magics and the get hook; stop the output timer and our cluster."""
    magics = _MAGICS.pop(id(ip), None)
    if magics is None:
        return
    if magics.own_tb_handler:
        from jray.jupyter import tracebacks

        tracebacks.uninstall(ip)
    magics.close()
    mm = ip.magics_manager
    mm.magics["line"].pop("jray", None)
    mm.magics["cell"].pop("remote", None)
    mm.registry.pop(type(magics).__name__, None)


def init(backend: str | None = None, address: str | None = None, **options: Any) -> Any:
    """``%jray init`` from Python: run this notebook's magics on ``backend`` (``"jray"``
    or ``"ray"``), starting a local cluster or joining the one at ``address``.

    Loads the extension into the running IPython shell first if needed; returns the
    cluster's ``resources`` and ``address``. Options as ``%jray init``'s (``num_cpus``...).
    """
    from IPython import get_ipython

    ip = get_ipython()
    if ip is None:
        raise RuntimeError("jray.jupyter.init: no IPython shell is running (use it in a "
                           "notebook, or call jray.init() / ray.init() in a script)")
    load_ipython_extension(ip)
    return _MAGICS[id(ip)].init(backend, address, **options)
