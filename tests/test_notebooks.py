"""Every notebook in notebooks/ runs top to bottom in a real kernel, and is stored clean."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from jray.testing import run_notebook

pytestmark = pytest.mark.integration
NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))


def test_the_seven_demo_notebooks_are_there() -> None:
    names = [p.stem for p in NOTEBOOKS]
    assert [n[:3] for n in names] == [f"0{i}-" for i in range(1, 8)], names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_is_stored_without_outputs(path: Path) -> None:
    book = nbformat.read(path, as_version=4)
    dirty = [i for i, c in enumerate(book.cells)
             if c.cell_type == "code" and (c.outputs or c.execution_count)]
    assert not dirty, f"{path.name}: cells {dirty} keep outputs (strip them before committing)"


@pytest.mark.timeout(300)
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_top_to_bottom(path: Path) -> None:
    seconds = run_notebook(path, timeout=120)
    assert seconds < 120, f"{path.name} took {seconds:.0f} s; demo notebooks stay under 2 minutes"
