"""Notebook tracebacks that show the user's code, not jray's (``JRAY_FULL_TRACEBACK=1``: all).

jray's client functions on a raising path set ``__tracebackhide__``; IPython
skips such frames except the last one, where the exception was raised. So
the extension installs an IPython custom exception handler that cuts the
traceback after its last frame of user code when a hidden jray frame follows
(only jray and the libraries it calls run there; a ``KeyboardInterrupt`` lands
in zmq's poll): the cell's own call site stays as the last frame. Then IPython
shows it as always.
Nothing else changes: an exception with no such tail is shown untouched.
"""

from __future__ import annotations

import os
import sys
from types import TracebackType
from typing import Any

import jray
from jray._private.debug import full_traceback

_JRAY_DIR = os.path.dirname(os.path.abspath(jray.__file__)) + os.sep
_PREFIXES = tuple({os.path.abspath(p) + os.sep for p in (sys.prefix, sys.base_prefix,
                                                         sys.exec_prefix)})


def _hidden_jray(tb: TracebackType) -> bool:
    frame = tb.tb_frame
    return bool(frame.f_locals.get("__tracebackhide__", False)) and \
        os.path.abspath(frame.f_code.co_filename).startswith(_JRAY_DIR)


def _library(tb: TracebackType) -> bool:
    """A frame of installed code (the standard library, site-packages, compiled modules)."""
    name = tb.tb_frame.f_code.co_filename
    if name.startswith("<"):  # a notebook's own cells (``<remote-cell-3>``) or frozen code
        return name.startswith("<frozen")
    path = os.path.abspath(name)
    return not os.path.isabs(name) or path.startswith(_PREFIXES) or path.startswith(_JRAY_DIR)


def trim(tb: TracebackType | None) -> TracebackType | None:
    """``tb`` cut after its last frame of user code when a hidden jray frame follows it
    (what follows is jray's and the libraries' it calls); its first frame always stays."""
    if tb is None or full_traceback():
        return tb
    last_user: TracebackType = tb
    hidden_after = False
    node = tb.tb_next
    while node is not None:
        if not _library(node):
            last_user, hidden_after = node, False
        elif _hidden_jray(node):
            hidden_after = True
        node = node.tb_next
    if hidden_after:
        last_user.tb_next = None
    return tb


def _handler(shell: Any, etype: type[BaseException], value: BaseException,
             tb: TracebackType | None, tb_offset: int | None = None) -> None:
    tb = trim(tb)
    if value.__traceback__ is not None and value.__traceback__ is not tb:
        trim(value.__traceback__)
    shell.showtraceback((etype, value, tb), tb_offset=tb_offset, running_compiled_code=True)


def install(shell: Any) -> bool:
    """Install the handler unless the shell has a custom handler already; True if installed."""
    if getattr(shell, "custom_exceptions", ()) != ():
        return False
    shell.set_custom_exc((Exception, KeyboardInterrupt), _handler)
    return True


def uninstall(shell: Any) -> None:
    shell.set_custom_exc((), None)
