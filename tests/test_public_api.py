"""The public API is one sorted ``__all__``; adding or removing a name is a decision."""

from __future__ import annotations

import jray
import jray.exceptions
import jray.state

EXPECTED = [
    "DynamicObjectRefGenerator",
    "ObjectID",
    "ObjectRef",
    "ObjectRefGenerator",
    "RemoteFunction",
    "__version__",
    "available_resources",
    "cancel",
    "cluster_resources",
    "dashboard",
    "exceptions",
    "get",
    "get_actor",
    "get_gpu_ids",
    "get_runtime_context",
    "init",
    "is_initialized",
    "kill",
    "method",
    "nodes",
    "put",
    "remote",
    "shutdown",
    "state",
    "util",
    "wait",
]


def test_all_is_sorted_and_as_expected() -> None:
    assert jray.__all__ == sorted(jray.__all__)
    assert jray.__all__ == EXPECTED


def test_every_public_name_exists() -> None:
    missing = [name for name in jray.__all__ if not hasattr(jray, name)]
    assert not missing
    for module in (jray.exceptions, jray.state):
        assert module.__all__ == sorted(module.__all__)
        assert all(hasattr(module, name) for name in module.__all__)


def test_exceptions_share_one_base() -> None:
    for name in jray.exceptions.__all__:
        cls = getattr(jray.exceptions, name)
        assert issubclass(cls, jray.exceptions.JrayError), name
        assert name in (jray.exceptions.__doc__ or ""), f"{name} missing from the hierarchy"


def test_star_import_gives_exactly_all() -> None:
    namespace: dict[str, object] = {}
    exec("from jray import *", namespace)
    assert sorted(k for k in namespace if k != "__builtins__") == EXPECTED
