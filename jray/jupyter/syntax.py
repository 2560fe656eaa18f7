"""IPython syntax in a ``%%remote`` cell, turned into Python before anything is submitted.

``to_python(body)`` runs IPython's own input transformers (``TransformerManager``,
what a local cell goes through): ``!cmd`` becomes ``get_ipython().system(...)``,
``x = !cmd`` ``get_ipython().getoutput(...)``, ``%magic args``
``get_ipython().run_line_magic(...)`` and ``x?`` a ``pinfo`` magic. Line numbers
are kept (leading blank lines, which the transformers drop, are put back).

``check(source, listing)`` then finds every use of ``get_ipython()`` and
raises ``UsageError`` for what cannot run in a worker (a line magic that needs
the kernel, a cell magic, ``?`` help), naming the construct and the cell line.
Shell commands and the line magics in ``REMOTE_LINE_MAGICS`` run remotely
(``remote_shell``). ``command_names`` lists the variables a command expands
(``!echo {n} $path``): they are inputs of the cell too.
"""

from __future__ import annotations

import ast
import re

from IPython.core.error import UsageError

#: Line magics a worker can run: they touch no kernel state (see ``remote_shell``).
REMOTE_LINE_MAGICS = frozenset({"sx", "system", "pwd", "env"})
_SHELL_CALLS = frozenset({"system", "getoutput"})
_DOLLAR = re.compile(r"(?<!\$)\$\{?([A-Za-z_]\w*)")
_BRACES = re.compile(r"(?<!\{)\{([^{}]+)\}(?!\})")


def to_python(body: str) -> str:
    """``body`` with IPython syntax transformed; unchanged when it has none."""
    first = next((ln for ln in body.splitlines() if ln.strip()), "")
    if not any(c in body for c in "!%?") and ">>>" not in body and "In [" not in body \
            and first == first.lstrip():
        return body  # no escapes, prompts or common indent: the transformers change nothing
    from IPython.core.inputtransformer2 import TransformerManager

    out = TransformerManager().transform_cell(body)  # type: ignore[no-untyped-call]
    if out.rstrip("\n") == body.rstrip("\n"):
        return body
    lines = body.splitlines(True)
    lead = 0
    while lead < len(lines) and not lines[lead].strip():
        lead += 1
    return "\n" * lead + out


def _ipython_call(node: ast.AST) -> tuple[str, list[ast.expr]] | None:
    """``get_ipython().NAME(args)`` -> (NAME, args)."""
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
        return None
    target = node.func.value
    if isinstance(target, ast.Call) and isinstance(target.func, ast.Name) \
            and target.func.id == "get_ipython":
        return node.func.attr, list(node.args)
    return None


def _const(args: list[ast.expr], i: int) -> str:
    arg = args[i] if len(args) > i else None
    return arg.value if isinstance(arg, ast.Constant) and isinstance(arg.value, str) else ""


def _line(listing: str, lineno: int) -> str:
    lines = listing.splitlines()
    return lines[lineno - 1].strip() if 0 < lineno <= len(lines) else ""


def check(source: str, listing: str) -> list[str]:
    """Raise ``UsageError`` for IPython constructs that need the kernel; else the shell
    commands' text (for ``command_names``). ``listing`` is the cell as the user wrote it."""
    commands: list[str] = []
    nodes = list(ast.walk(ast.parse(source)))
    callees = {id(n.func) for n in nodes if isinstance(n, ast.Call) and _ipython_call(n)}
    for node in nodes:
        call = _ipython_call(node)
        if call is None:
            if isinstance(node, ast.Attribute) and id(node) not in callees \
                    and isinstance(node.value, ast.Call) and isinstance(node.value.func, ast.Name) \
                    and node.value.func.id == "get_ipython":
                where = node.lineno
                raise UsageError(
                    f"%%remote: line {where}: get_ipython().{node.attr} needs the kernel; "
                    f"it cannot run in a remote cell: {_line(listing, where)}")
            continue
        method, args = call
        where = getattr(node, "lineno", 0)
        text = _line(listing, where)
        if method in _SHELL_CALLS:
            commands.append(_const(args, 0))
            continue
        if method == "run_line_magic":
            name = _const(args, 0).lstrip("%")
            if name in REMOTE_LINE_MAGICS and not (name == "env" and "=" in _const(args, 1)):
                if name in ("sx", "system"):
                    commands.append(_const(args, 1))
                continue
            if name in ("pinfo", "pinfo2", "psearch"):
                raise UsageError(f"%%remote: line {where}: '?' help is shown by the kernel; "
                                 f"run it in a cell of its own: {text}")
            raise UsageError(
                f"%%remote: line {where}: the line magic %{name} needs the kernel; it cannot "
                f"run in a remote cell (remote cells run shell commands and "
                f"%{', %'.join(sorted(REMOTE_LINE_MAGICS))}): {text}")
        if method == "run_cell_magic":
            raise UsageError(f"%%remote: line {where}: the cell magic %%{_const(args, 0)} "
                             f"cannot run inside a remote cell: {text}")
        raise UsageError(f"%%remote: line {where}: get_ipython().{method}() needs the kernel; "
                         f"it cannot run in a remote cell: {text}")
    return commands


def command_names(commands: list[str]) -> list[str]:
    """Variables that shell commands expand (``$name``, ``{expression}``), in order."""
    out: list[str] = []
    for cmd in commands:
        found = _DOLLAR.findall(cmd)
        for expr in _BRACES.findall(cmd):
            try:
                tree = ast.parse(expr.strip(), mode="eval")
            except SyntaxError:
                continue
            found += [n.id for n in ast.walk(tree) if isinstance(n, ast.Name)]
        out += [n for n in found if n not in out]
    return out
