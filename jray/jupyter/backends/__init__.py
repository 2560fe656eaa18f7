"""Backends of the notebook layer: jray's cluster (default), a Ray cluster, a fake one.

``make(name)`` builds one by name; the Ray backend's module (the only place in
``jray.jupyter`` that imports Ray) is imported only when it is chosen.
"""

from __future__ import annotations

from jray.jupyter.backends.base import Backend, Caps, Runtime

NAMES = ("jray", "ray", "fake")

__all__ = ["NAMES", "Backend", "Caps", "Runtime", "make"]


def make(name: str) -> Backend:
    """A new backend called ``name`` (``ValueError`` naming the choices otherwise)."""
    if name == "jray":
        from jray.jupyter.backends.jray_backend import JrayBackend

        return JrayBackend()
    if name == "ray":
        from jray.jupyter.backends.ray_backend import RayBackend

        return RayBackend()
    if name == "fake":
        from jray.jupyter.backends.fake import FakeBackend

        return FakeBackend()
    raise ValueError(f"backend {name!r}: choose one of {', '.join(NAMES)}")
