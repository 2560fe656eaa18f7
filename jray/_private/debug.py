"""Debugging knobs read from the environment (``JRAY_*``), one function each.

``JRAY_FULL_TRACEBACK=1`` shows jray's own frames in tracebacks: the client
functions on the raising path set ``__tracebackhide__ = HIDE`` (IPython and
pytest skip such frames while ``HIDE`` is true), and the Jupyter layer trims
them from the end of a notebook traceback only while the switch is off.
"""

from __future__ import annotations

import os


def full_traceback() -> bool:
    """True when ``JRAY_FULL_TRACEBACK`` is set to anything but ``""``/``0``."""
    return os.environ.get("JRAY_FULL_TRACEBACK", "") not in ("", "0")


class _Hide:
    """Truthy unless the full traceback is asked for; read when a traceback is shown,
    so the frames that hold it cost one store each on the hot path."""

    def __bool__(self) -> bool:
        return not full_traceback()

    def __repr__(self) -> str:
        return f"<jray frame hidden: {bool(self)}>"


HIDE = _Hide()
