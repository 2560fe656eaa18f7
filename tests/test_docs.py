"""docs/reference.md is generated from the code and kept current; nothing is left out of it."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).parent.parent


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_reference", ROOT / "docs" /
                                                  "make_reference.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _sources() -> str:
    return "\n".join(p.read_text() for p in (ROOT / "jray").rglob("*.py"))


def test_reference_is_current() -> None:
    expected = _generator().render()
    current = (ROOT / "docs" / "reference.md").read_text()
    assert current == expected, "docs/reference.md is stale: run python docs/make_reference.py"


def test_every_environment_variable_is_documented() -> None:
    used = set(re.findall(r"\bJRAY_[A-Z][A-Z_]+\b", _sources()))
    assert used - set(_generator().ENVIRONMENT) == set()


def test_every_error_jray_raises_says_what_to_do() -> None:
    from jray import exceptions as E

    sources = "\n".join(p.read_text() for p in (ROOT / "jray").rglob("*.py")
                        if p.name != "exceptions.py")
    raised = {n for n in E.__all__ if re.search(rf"\b{n}\(", sources)}
    remedies = _generator().REMEDIES
    assert raised - set(remedies) == set()
    assert set(remedies) <= set(E.__all__)


def test_public_names_have_docstrings() -> None:
    assert "(no docstring)" not in _generator().render()
