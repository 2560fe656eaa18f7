"""What ``get_ipython()`` is inside a remote cell: shell commands and a few line magics.

IPython's transformers turn ``!cmd`` into ``get_ipython().system(cmd)`` and
``x = !cmd`` into ``get_ipython().getoutput(cmd)`` (``syntax.to_python``, in
the kernel). In the worker these run the command with ``/bin/sh``, with
``{expression}`` and ``$name`` expanded from the caller's namespace as
IPython does; ``system`` streams the command's output into the cell's output
and sets ``_exit_code``. ``%pwd``, ``%env [NAME]``, ``%sx`` and ``%system``
work too. Everything else was refused before the cell was submitted
(``syntax.check``). Runs in workers: IPython is optional here.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any


def _caller_ns(depth: int) -> dict[str, Any]:
    frame = sys._getframe(depth + 1)
    return {**frame.f_globals, **frame.f_locals}


def _expand(cmd: str, ns: dict[str, Any]) -> str:
    try:
        from IPython.utils.text import DollarFormatter
    except ImportError:  # no IPython in this worker: the command as written
        return cmd
    try:
        return str(DollarFormatter().vformat(cmd, args=[], kwargs=ns))
    except Exception:  # IPython too leaves a command it cannot expand as it is
        return cmd


def _lines(text: str) -> list[str]:
    lines = text.splitlines()
    try:
        from IPython.utils.text import SList

        return SList(lines)
    except ImportError:
        return lines


class RemoteShell:
    """The subset of IPython's shell a worker can honour."""

    def system(self, cmd: str, _depth: int = 1) -> None:
        ns = _caller_ns(_depth)
        proc = subprocess.Popen(_expand(cmd, ns), shell=True, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True)
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                sys.stdout.write(line)
            code = proc.wait()
        finally:  # a cancelled cell must not leave its command running
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        frame = sys._getframe(_depth)
        frame.f_globals["_exit_code"] = code

    def getoutput(self, cmd: str, split: bool = True, depth: int = 0, _depth: int = 1) -> Any:
        ns = _caller_ns(_depth + depth)
        done = subprocess.run(_expand(cmd, ns), shell=True, capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, check=False)
        out = done.stdout + done.stderr
        return _lines(out) if split else out

    def run_line_magic(self, name: str, line: str, _stack_depth: int = 1) -> Any:
        name = name.lstrip("%")
        if name in ("sx", "system"):
            return self.getoutput(line, _depth=2)
        if name == "pwd":
            return os.getcwd()
        if name == "env":
            key = line.strip()
            return dict(os.environ) if not key else os.environ.get(key)
        raise RuntimeError(f"%{name} cannot run in a remote cell")


_SHELL = RemoteShell()


def get_ipython() -> RemoteShell:
    return _SHELL
