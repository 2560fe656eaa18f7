"""What a ``%%remote`` cell reads and writes, found by static analysis (no kernel needed).

``analyze(source)`` returns a ``CellInfo``:

- ``reads``: names the cell loads before binding them at top level (in source
  order), including globals used inside functions and classes it defines;
  these are the cell's inputs when they exist in the notebook's namespace.
- ``writes``: names bound at top level (assignments, ``def``, ``class``,
  ``import``, ``for``/``with`` targets, walrus), in order of first binding;
  these are the cell's outputs.
- ``last_expr``: whether the cell ends with an expression whose value is
  shown, and ``quiet`` when that expression ends with ``;``.

``compile_cell`` compiles the body and the trailing expression separately, with
a filename such as ``<remote-cell-3>`` so tracebacks carry the cell's own line
numbers. The module imports only the standard library: workers import it too.
"""

from __future__ import annotations

import ast
import linecache
import symtable
from dataclasses import dataclass
from types import CodeType

_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda,
           ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)


@dataclass(frozen=True)
class CellInfo:
    reads: tuple[str, ...]
    writes: tuple[str, ...]
    last_expr: bool
    quiet: bool
    first_name: str | None = None  # the first name bound other than by an import


def _global_refs(table: symtable.SymbolTable) -> set[str]:
    """Names referenced in nested scopes that resolve to the module's globals."""
    names: set[str] = set()
    for child in table.get_children():
        for sym in child.get_symbols():
            if sym.is_referenced() and sym.is_global():
                names.add(sym.get_name())
        names |= _global_refs(child)
    return names


def _top_binds(node: ast.AST) -> list[str]:
    """Names one top-level statement binds in the module scope, in source order."""
    out: list[str] = []

    def visit(n: ast.AST, top: bool) -> None:
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            if top:
                out.append(n.name)
            for d in n.decorator_list:
                visit(d, top)
            return
        if isinstance(n, (ast.Import, ast.ImportFrom)):
            for alias in n.names:
                if alias.name != "*":
                    out.append(alias.asname or alias.name.split(".")[0])
            return
        if not top:
            pass
        elif isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store):
            out.append(n.id)
        elif isinstance(n, (ast.ExceptHandler, ast.MatchAs, ast.MatchStar)) and n.name:
            out.append(n.name)
        for child in ast.iter_child_nodes(n):
            visit(child, top and not isinstance(n, _SCOPES))

    visit(node, True)
    return out


def _module_aug_targets(node: ast.AST) -> set[str]:
    """Targets of ``x += ...`` in the module scope (symtable does not count them as reads)."""
    out: set[str] = set()
    if isinstance(node, ast.AugAssign) and isinstance(node.target, ast.Name):
        out.add(node.target.id)
    for child in ast.iter_child_nodes(node):
        if not isinstance(child, _SCOPES):
            out |= _module_aug_targets(child)
    return out


def _loads(node: ast.AST) -> list[str]:
    out: list[str] = []
    for n in ast.walk(node):
        if isinstance(n, ast.AugAssign) and isinstance(n.target, ast.Name):
            out.append(n.target.id)  # ``x += 1`` reads x first
        elif isinstance(n, ast.Name) and isinstance(n.ctx, (ast.Load, ast.Del)):
            out.append(n.id)
    return out


def analyze(source: str, filename: str = "<cell>") -> CellInfo:
    """Find a cell's inputs, outputs and trailing expression. Raises ``SyntaxError``."""
    tree = ast.parse(source, filename)
    table = symtable.symtable(source, filename, "exec")
    referenced = {s.get_name() for s in table.get_symbols() if s.is_referenced()}
    referenced |= _global_refs(table) | _module_aug_targets(tree)
    reads: list[str] = []
    writes: list[str] = []
    bound: set[str] = set()
    first: str | None = None
    for stmt in tree.body:
        for name in _loads(stmt):
            if name in referenced and name not in bound and name not in reads:
                reads.append(name)
        binds = _top_binds(stmt)
        if first is None and binds and not isinstance(stmt, (ast.Import, ast.ImportFrom)):
            first = binds[0]
        for name in binds:
            bound.add(name)
            if name not in writes:
                writes.append(name)
    last = bool(tree.body) and isinstance(tree.body[-1], ast.Expr)
    quiet = last and source.rstrip().endswith(";")
    return CellInfo(tuple(reads), tuple(writes), last, quiet, first)


def compile_cell(source: str, filename: str) -> tuple[CodeType, CodeType | None]:
    """Compile the cell: the statements (exec) and the trailing expression (eval) if any.

    The source is registered in ``linecache`` under ``filename`` so that
    tracebacks show the cell's lines.
    """
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    tree = ast.parse(source, filename)
    tail: CodeType | None = None
    if tree.body and isinstance(tree.body[-1], ast.Expr):
        last = tree.body.pop()
        assert isinstance(last, ast.Expr)
        expr = ast.Expression(last.value)
        tail = compile(expr, filename, "eval")
    return compile(tree, filename, "exec"), tail


def default_label(source: str, info: CellInfo) -> str:
    """The cell's name in the DAG: its first assigned name, else its first line."""
    if info.first_name:
        return info.first_name
    for line in source.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            return line.strip()[:40]
    return "remote-cell"
