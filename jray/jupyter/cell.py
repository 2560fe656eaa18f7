"""What a ``%%remote`` cell reads and writes, found by static analysis (no kernel needed).

``analyze(source)`` returns a ``CellInfo``:

- ``reads``: names the cell loads before binding them at top level (in source
  order), including globals used inside functions and classes it defines;
  these are the cell's inputs when they exist in the notebook's namespace.
- ``writes``: names bound at top level (assignments, ``def``, ``class``,
  ``import``, ``for``/``with`` targets, walrus), in order of first binding;
  these are the cell's outputs.
  Names declared ``global`` and assigned in a function the cell defines are
  writes too.
- ``imports``: for names bound at top level by ``import`` statements only, the
  statement that binds each one (``import numpy as np``): the kernel runs it
  to bind the module itself, as these names never travel as values.
- ``star_imports``: modules of ``from M import *``; ``deletes``: names the
  cell ``del``etes at top level; ``temporaries``: ``with``/``for``/``except``
  targets (dropped quietly when they cannot be pickled).
- ``mutated``: names the cell changes in place (subscript, attribute and
  augmented stores, ``del x[k]``, calls of mutating methods such as
  ``append``/``update``/``fill``), also inside functions it defines;
  ``watched``: names passed to other calls or whose other methods are called
  (they may change in place: the worker compares them before and after).
- ``last_expr``: whether the cell ends with an expression whose value is
  shown, and ``quiet`` when that expression ends with ``;``.

``compile_cell`` compiles the body and the trailing expression separately, with
a filename such as ``<remote-cell-3>`` so tracebacks carry the cell's own line
numbers. The module imports only the standard library: workers import it too.
"""

from __future__ import annotations

import ast
import dis
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
    imports: tuple[tuple[str, str], ...] = ()  # (name, the import statement binding it)
    star_imports: tuple[str, ...] = ()
    deletes: tuple[str, ...] = ()
    temporaries: tuple[str, ...] = ()
    mutated: tuple[str, ...] = ()
    watched: tuple[str, ...] = ()


def _global_refs(table: symtable.SymbolTable) -> set[str]:
    """Names referenced in nested scopes that resolve to the module's globals."""
    names: set[str] = set()
    for child in table.get_children():
        for sym in child.get_symbols():
            if sym.is_referenced() and sym.is_global():
                names.add(sym.get_name())
        names |= _global_refs(child)
    return names


MUTATORS = frozenset({
    "append", "extend", "insert", "remove", "pop", "clear", "sort", "reverse", "update",
    "setdefault", "popitem", "add", "discard", "difference_update", "intersection_update",
    "symmetric_difference_update", "appendleft", "extendleft", "popleft", "rotate",
    "move_to_end", "fill", "resize", "put", "itemset", "setflags", "partition", "__setitem__",
    "__delitem__", "__iadd__", "__imul__", "__setattr__", "__delattr__"})
#: Calls and methods that never change their arguments or receiver.
PURE = frozenset({
    "print", "len", "repr", "str", "int", "float", "bool", "complex", "sum", "min", "max",
    "sorted", "list", "tuple", "set", "frozenset", "dict", "enumerate", "zip", "range",
    "isinstance", "issubclass", "type", "iter", "any", "all", "abs", "round", "hash", "id",
    "format", "display", "reversed", "map", "filter", "hasattr", "getattr", "callable",
    "divmod", "pow", "ord", "chr", "vars", "dir", "copy", "deepcopy", "get", "keys", "values",
    "items", "count", "index", "mean", "std", "var", "reshape", "astype", "tolist", "item",
    "dot", "startswith", "endswith", "join", "split", "strip", "lower", "upper", "replace",
    "encode", "decode", "head", "tail", "describe", "to_numpy", "nbytes", "shape"})


def _root(node: ast.AST) -> str | None:
    while isinstance(node, (ast.Attribute, ast.Subscript, ast.Starred)):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


def _locals_of(fn: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> set[str]:
    """A function's own names: parameters and names it binds (not declared global)."""
    a = fn.args
    names = {x.arg for x in (*a.posonlyargs, *a.args, *a.kwonlyargs)}
    names |= {x.arg for x in (a.vararg, a.kwarg) if x is not None}
    declared: set[str] = set()
    for n in ast.walk(fn) if not isinstance(fn, ast.Lambda) else []:
        if isinstance(n, (ast.Global, ast.Nonlocal)):
            declared |= set(n.names)
        elif isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store):
            names.add(n.id)
    return names - declared


def _in_place(tree: ast.AST) -> tuple[list[str], list[str]]:
    """(names changed in place, names that calls may change), in the module's scope."""
    mutated: list[str] = []
    watched: list[str] = []

    def note(out: list[str], name: str | None, hidden: set[str]) -> None:
        if name is not None and name not in hidden and name not in out:
            out.append(name)

    def visit(n: ast.AST, hidden: set[str]) -> None:
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            inner = hidden | _locals_of(n)
            for child in ast.iter_child_nodes(n):
                visit(child, inner)
            return
        if isinstance(n, (ast.Subscript, ast.Attribute)) and isinstance(n.ctx, (ast.Store,
                                                                                 ast.Del)):
            note(mutated, _root(n), hidden)
        elif isinstance(n, ast.AugAssign):  # ``big += 1`` works in place on arrays, lists
            note(mutated, _root(n.target), hidden)
        elif isinstance(n, ast.Call):
            func = n.func
            name = func.attr if isinstance(func, ast.Attribute) else \
                func.id if isinstance(func, ast.Name) else None
            if isinstance(func, ast.Attribute):
                note(mutated if name in MUTATORS else watched,
                     None if name in PURE else _root(func.value), hidden)
            if name not in PURE:
                for arg in (*n.args, *(k.value for k in n.keywords)):
                    note(watched, _root(arg), hidden)
        for child in ast.iter_child_nodes(n):
            visit(child, hidden)

    visit(tree, set())
    return mutated, [w for w in watched if w not in mutated]


def _global_writes(table: symtable.SymbolTable) -> list[str]:
    """Names that functions (and their nested scopes) declare ``global`` and assign."""
    names: list[str] = []
    for child in table.get_children():
        for sym in child.get_symbols():
            if sym.is_declared_global() and sym.is_assigned() and sym.get_name() not in names:
                names.append(sym.get_name())
        names += [n for n in _global_writes(child) if n not in names]
    return names


def _import_stmt(stmt: ast.Import | ast.ImportFrom, alias: ast.alias) -> str | None:
    """The import statement binding just ``alias`` (None for relative imports)."""
    tail = f" as {alias.asname}" if alias.asname else ""
    if isinstance(stmt, ast.Import):
        return f"import {alias.name}{tail}"
    if stmt.level or not stmt.module:
        return None
    return f"from {stmt.module} import {alias.name}{tail}"


Bind = tuple[str, str | None, bool]  # (name, import statement if bound by one, temporary)


def _top_binds(node: ast.AST) -> list[Bind]:
    """Names one top-level statement binds in the module scope, in source order."""
    out: list[Bind] = []

    def visit(n: ast.AST, top: bool, temp: bool) -> None:
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            if top:
                out.append((n.name, None, False))
            for d in n.decorator_list:
                visit(d, top, False)
            return
        if isinstance(n, (ast.Import, ast.ImportFrom)):
            for alias in n.names:
                if alias.name != "*":
                    out.append((alias.asname or alias.name.split(".")[0],
                                _import_stmt(n, alias) or "", False))
            return
        if not top:
            pass
        elif isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store):
            out.append((n.id, None, temp))
        elif isinstance(n, ast.ExceptHandler) and n.name:
            out.append((n.name, None, True))
        elif isinstance(n, (ast.MatchAs, ast.MatchStar)) and n.name:
            out.append((n.name, None, False))
        for field, value in ast.iter_fields(n):
            children = value if isinstance(value, list) else [value]
            is_target = (isinstance(n, (ast.For, ast.AsyncFor)) and field == "target") or \
                (isinstance(n, ast.withitem) and field == "optional_vars")
            for child in children:
                if isinstance(child, ast.AST):
                    visit(child, top and not isinstance(n, _SCOPES), temp or is_target)

    visit(node, True, False)
    return out


def _top_deletes(node: ast.AST) -> list[str]:
    """Names a top-level statement ``del``etes in the module scope."""
    if isinstance(node, _SCOPES):
        return []
    if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Del):
        return [node.id]
    return [n for child in ast.iter_child_nodes(node) for n in _top_deletes(child)]


def _star_modules(node: ast.AST) -> list[str]:
    return [n.module for n in ast.walk(node) if isinstance(n, ast.ImportFrom)
            and n.module and not n.level and any(a.name == "*" for a in n.names)]


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
    deletes = [n for stmt in tree.body for n in _top_deletes(stmt)]
    mutated, watched = _in_place(tree)
    global_writes = _global_writes(table)  # ``counter += 1`` there reads it first
    referenced |= _global_refs(table) | _module_aug_targets(tree) | set(deletes)
    referenced |= set(global_writes)
    reads: list[str] = []
    writes: list[str] = []
    bound: set[str] = set()
    first: str | None = None
    imports: dict[str, str | None] = {}  # None: also bound otherwise
    temps: dict[str, bool] = {}
    for stmt in tree.body:
        for name in _loads(stmt):
            if name in referenced and name not in bound and name not in reads:
                reads.append(name)
        binds = _top_binds(stmt)
        if first is None and binds and not isinstance(stmt, (ast.Import, ast.ImportFrom)):
            first = binds[0][0]
        for name, stmt_text, temp in binds:
            bound.add(name)
            if name not in writes:
                writes.append(name)
            imports[name] = stmt_text if (stmt_text and imports.get(name, "") is not None) \
                else None
            temps[name] = temp and temps.get(name, True)
    writes += [n for n in global_writes if n not in writes]
    last = bool(tree.body) and isinstance(tree.body[-1], ast.Expr)
    quiet = last and source.rstrip().endswith(";")
    return CellInfo(
        tuple(reads), tuple(writes), last, quiet, first,
        imports=tuple((n, s) for n, s in imports.items() if s),
        star_imports=tuple(dict.fromkeys(m for stmt in tree.body for m in _star_modules(stmt))),
        deletes=tuple(dict.fromkeys(deletes)),
        temporaries=tuple(n for n, t in temps.items() if t),
        mutated=tuple(mutated), watched=tuple(watched),
    )


def global_stores(value: object) -> list[str]:
    """Globals that a notebook function (or the methods of a notebook class) assigns or
    deletes: calling it in a remote cell changes them, so they are outputs too."""
    codes = []
    if isinstance(value, type) and value.__module__ == "__main__":
        for attr in vars(value).values():
            fn = getattr(attr, "__func__", attr)
            if getattr(fn, "__code__", None) is not None:
                codes.append(fn.__code__)
    elif callable(value) and getattr(value, "__module__", None) == "__main__" \
            and isinstance(getattr(value, "__code__", None), CodeType):
        codes.append(value.__code__)  # type: ignore[attr-defined]
    out: list[str] = []
    while codes:
        code = codes.pop()
        for ins in dis.get_instructions(code):
            if ins.opname in ("STORE_GLOBAL", "DELETE_GLOBAL") and ins.argval not in out:
                out.append(str(ins.argval))
        codes += [c for c in code.co_consts if isinstance(c, CodeType)]
    return out


def compile_cell(source: str, filename: str,
                 listing: str | None = None) -> tuple[CodeType, CodeType | None]:
    """Compile the cell: the statements (exec) and the trailing expression (eval) if any.

    ``listing`` (default: the source) is registered in ``linecache`` under
    ``filename`` so that tracebacks show the cell's lines as the user wrote them.
    """
    shown = source if listing is None else listing
    linecache.cache[filename] = (len(shown), None, shown.splitlines(True), filename)
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
