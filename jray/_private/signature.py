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

    __slots__ = ("where", "params", "min_pos", "max_pos", "_sig")

    def __init__(self, where: str, params: Params | None) -> None:
        self.where = where
        self.params = params
        self._sig: inspect.Signature | None = None
        if params is None:  # unknown signature: accept anything
            self.min_pos, self.max_pos = 0, _NO_LIMIT
            return
        positional = [p for p in params if p[1] in (0, 1)]
        required_kw_only = any(p[1] == 3 and not p[2] for p in params)
        self.min_pos = sum(1 for p in positional if not p[2])
        self.max_pos = _NO_LIMIT if any(p[1] == 2 for p in params) else len(positional)
        if required_kw_only:  # a call without keywords can never fit: always bind
            self.min_pos, self.max_pos = 1, 0

    def __call__(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if not kwargs and self.min_pos <= len(args) <= self.max_pos:
            return
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
