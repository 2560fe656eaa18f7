"""``ArgCheck`` accepts exactly the calls Python accepts (checked against ``inspect``)."""

from __future__ import annotations

import inspect
import itertools
from typing import Any

import pytest

from jray._private.signature import check_of, params_of


def plain(x: Any, y: Any) -> None: ...
def defaults(x: Any, y: Any = 1, z: Any = 2) -> None: ...
def star(x: Any, *rest: Any) -> None: ...
def kw_only(x: Any, *, k: Any, j: Any = 0) -> None: ...
def var_kw(x: Any, **more: Any) -> None: ...
def pos_only(a: Any, b: Any = 0, /, c: Any = 1) -> None: ...
def pos_only_kw(a: Any, /, **more: Any) -> None: ...
def everything(a: Any, /, b: Any, c: Any = 0, *rest: Any, d: Any, e: Any = 1,
               **more: Any) -> None: ...
def nothing() -> None: ...


FUNCTIONS = [plain, defaults, star, kw_only, var_kw, pos_only, pos_only_kw, everything, nothing]
NAMES = ["a", "b", "c", "d", "e", "j", "k", "x", "y", "z", "more", "other"]
CALLS = [(n, kws) for n in range(5) for size in range(3)
         for kws in itertools.combinations(NAMES, size)]


def _python_accepts(fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    try:
        inspect.signature(fn).bind(*args, **kwargs)
    except TypeError:
        return False
    return True


@pytest.mark.parametrize("fn", FUNCTIONS, ids=lambda f: f.__name__)
def test_agrees_with_inspect_on_every_call_shape(fn: Any) -> None:
    check = check_of(f"{fn.__name__}.remote()", fn)
    for n, names in CALLS:
        args = tuple(range(n))
        kwargs = dict.fromkeys(names, 0)
        expected = _python_accepts(fn, args, kwargs)
        try:
            check(args, kwargs)
            accepted = True
        except TypeError as exc:
            accepted = False
            assert str(exc).startswith(f"{fn.__name__}.remote(): "), exc
        assert accepted == expected, (fn.__name__, args, kwargs)


def test_skip_first_drops_self() -> None:
    class C:
        def m(self, x: Any) -> None: ...

    check = check_of("C.m.remote()", C.m, skip_first=True)
    check((1,), {})
    with pytest.raises(TypeError, match=r"C\.m\.remote\(\): missing a required argument: 'x'"):
        check((), {})


def test_unknown_signature_accepts_anything() -> None:
    assert params_of(max) is None  # a builtin without a signature
    check = check_of("max.remote()", max)
    check((1, 2, 3), {"any": 1})
    check((), {})


def test_params_are_small_and_picklable() -> None:
    import pickle

    params = params_of(everything)
    assert params is not None and pickle.loads(pickle.dumps(params)) == params
    assert [p[0] for p in params] == ["a", "b", "c", "rest", "d", "e", "more"]
