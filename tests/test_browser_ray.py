"""The live views on a Ray cluster in a real browser: JupyterLab, chromium, Playwright.

A real Ray head (``ray start --head`` with its dashboard, whose API server
answers the state API the views read) is joined by a notebook through
``%jray init --backend ray --address``; the notebook opens ``%jray dashboard``
and runs ``--no-block`` cells (one reading another's output, one failing) and
plain Ray tasks. The test checks, in the inline view and in the side panel, what
only Ray reported: the tasks and their final states, the edge between the two
cells (recorded by the notebook), plain Ray tasks drawn without inputs and
labelled so, and the failed cell's error as Ray recorded it. JupyterLab and the
browser come from ``test_browser`` (its ``lab`` fixture and helpers).
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Iterator
from typing import Any

import pytest
from ray_cluster import ray_head, ray_views_missing

_why = ray_views_missing()
if _why:
    pytest.skip(f"the Ray views' browser test needs Ray with its dashboard: {_why}",
                allow_module_level=True)

from test_browser import lab, lab_page  # noqa: E402, F401

pytestmark = pytest.mark.integration


def _cells(address: str) -> list[str]:
    return [
        f"%load_ext jray\n%jray init --backend ray --address {address}",
        "%jray dashboard",
        "%%remote --no-block\nbase = 2",
        "%%remote --no-block\nscaled = base * 3",
        "%%remote --no-block\nraise ValueError('broken on purpose')",
        "import ray\n\n@ray.remote\ndef square(x):\n    return x * x\n\n"
        "squares = ray.get([square.remote(i) for i in range(3)])",
    ]


def _notebook(path: pathlib.Path, cells: list[str]) -> None:
    nb = {"cells": [{"cell_type": "code", "metadata": {}, "source": src, "outputs": [],
                     "execution_count": None, "id": f"cell-{i}"}
                    for i, src in enumerate(cells)],
          "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                      "language": "python"}},
          "nbformat": 4, "nbformat_minor": 5}
    path.write_text(json.dumps(nb))


@pytest.fixture
def ray_address() -> Iterator[str]:
    """A Ray head with its dashboard and token authentication; the kernels JupyterLab
    starts find its token by the path ``ray_head`` puts in the environment (the
    ``lab`` fixture gives them a HOME of their own)."""
    with ray_head(num_cpus=2, dashboard=True, token=True) as (address, _):
        yield address


@pytest.mark.timeout(400)
def test_panel_and_inline_view_show_the_ray_clusters_tasks(
        ray_address: str, lab: dict[str, Any]) -> None:
    _notebook(lab["log"].parent / "work" / "views.ipynb", _cells(ray_address))
    with lab_page(lab, 60_000) as page:
        page.locator(".jp-SideBar [title='jray']").first.click()
        panel = page.locator("#jray-views-panel")
        panel.wait_for()
        page.evaluate("void window.jupyterapp.commands.execute('notebook:run-all-cells')")
        for scope in (".jray-views:not(#jray-views-panel *)", "#jray-views-panel"):
            # Ray's task events reach its state API about a second late; the view polls
            page.wait_for_function(
                f"document.querySelectorAll(`{scope} circle[data-state=finished]`).length"
                f" >= 5 && document.querySelectorAll(`{scope} circle[data-state=failed]`)"
                f".length >= 1", timeout=120_000)
            assert page.locator(f"{scope} path.jv-e").count() == 1  # base -> scaled
            texts = page.locator(f"{scope} table[data-jv=tasks] tbody tr").all_inner_texts()
            plain = [t for t in texts if "square" in t]
            assert len(plain) == 3 and all("inputs unknown" in t for t in plain), texts
            assert not any("OutputHub" in t for t in texts), texts  # the layer's own
            page.locator(f"{scope} circle[data-state=failed]").click()
            page.wait_for_function(
                f"document.querySelector(`{scope} [data-jv=detail]`).textContent"
                f".includes('broken on purpose')")
            detail = page.locator(f"{scope} [data-jv=detail]").inner_text()
            assert "cell: In [" in detail and "(Ray task " in detail, detail
        panel.screenshot(path=str(lab["log"].parent / "panel-ray.png"))
