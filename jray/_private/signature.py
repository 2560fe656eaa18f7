"""Call arguments checked against a function's signature when ``.remote()`` is called.

Ray binds a remote call's arguments to the function's signature at submission,
so ``f.remote(1)`` for ``def f(x, y)`` raises ``TypeError`` in the caller,
before anything runs. ``ArgCheck`` does the same, cheaply: the signature is
read once per function (or actor method), kept as a tuple of
``(name, kind, has_default)`` (small and picklable, so it travels with actor
handles), and a call with positional arguments only, in the allowed range, is
accepted by two comparisons. Anything else is bound with ``inspect`` to get
Python's own message, prefixed with the name of the function.
"""

from __future__ import annotations

import inspect
from typing import Any

Params = tuple[tuple[str, int, bool], ...]

_P = inspect.Parameter
_KIND = {_P.POSITIONAL_ONLY: 0, _P.POSITIONAL_OR_KEYWORD: 1, _P.VAR_POSITIONAL: 2,
         _P.KEYWORD_ONLY: 3, _P.VAR_KEYWORD: 4}
_FROM_KIND = {v: k for k, v in _KIND.items()}
_NO_LIMIT = 1 << 62


def params_of(fn: Any, skip_first: bool = False) -> Params | None:
    """The parameters of ``fn`` (without the first when ``skip_first``); None if unknown."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):  # some builtins and C callables have none
        return None
    out = [(p.name, _KIND[p.kind], p.default is not _P.empty) for p in sig.parameters.values()]
    if skip_first and out and out[0][1] in (0, 1):
        out = out[1:]
    return tuple(out)


class _Default:
    def __repr__(self) -> str:
        return "<default>"


class ArgCheck:
    """Raises ``TypeError`` naming ``where`` when arguments do not fit the parameters."""

    __slots__ = ("where", "params", "min_pos", "max_pos", "need_kw", "names", "required",
                 "var_kw", "_sig")

    def __init__(self, where: str, params: Params | None) -> None:
        self.where = where
        self.params = params
        self._sig: inspect.Signature | None = None
        #: keyword-passable name -> its position (keyword-only: _NO_LIMIT)
        self.names: dict[str, int] = {}
        #: required parameters as (name, position); positional-only ones have no name
        self.required: list[tuple[str | None, int]] = []
        self.var_kw = True
        self.need_kw = False
        if params is None:  # unknown signature: accept anything
            self.min_pos, self.max_pos = 0, _NO_LIMIT
            return
        pos = 0
        for name, kind, has_default in params:
            if kind in (0, 1):
                if kind == 1:
                    self.names[name] = pos
                if not has_default:
                    self.required.append((name if kind == 1 else None, pos))
                pos += 1
            elif kind == 3:
                self.names[name] = _NO_LIMIT
                if not has_default:
                    self.required.append((name, _NO_LIMIT))
                    self.need_kw = True
        self.var_kw = any(p[1] == 4 for p in params)
        self.min_pos = sum(1 for _, p in self.required if p != _NO_LIMIT)
        self.max_pos = _NO_LIMIT if any(p[1] == 2 for p in params) else pos

    def __call__(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        n = len(args)
        if not kwargs:
            if self.min_pos <= n <= self.max_pos and not self.need_kw:
                return
        elif n <= self.max_pos:  # the same rules as Python's, without building a binding
            names = self.names
            for key in kwargs:
                at = names.get(key)
                if (at is None and not self.var_kw) or (at is not None and at < n):
                    break  # unknown, or also given by position
            else:
                for name, at in self.required:
                    if at >= n and name not in kwargs:
                        break
                else:
                    return
        self._bind(args, kwargs)

    def _bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """The slow path: Python's own binding, for its error message."""
        if self.params is None:
            return
        sig = self._sig
        if sig is None:
            default = _Default()
            sig = self._sig = inspect.Signature([
                _P(name, _FROM_KIND[kind], default=default if has_default else _P.empty)
                for name, kind, has_default in self.params
            ])
        try:
            sig.bind(*args, **kwargs)
        except TypeError as exc:
            raise TypeError(f"{self.where}: {exc}") from None


def check_of(where: str, fn: Any, skip_first: bool = False) -> ArgCheck:
    return ArgCheck(where, params_of(fn, skip_first))
