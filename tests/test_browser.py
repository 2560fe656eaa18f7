"""The live views in a real browser: JupyterLab on loopback, Debian's chromium, Playwright.

Opens a notebook, runs ``jray.dashboard()`` and ``--no-block``-style cells with
dependencies and a failing task, and checks what the inline view draws: the
tasks as nodes with their final states, the edges, the failed task's remote
traceback on click, the store table. It saves screenshots of the inline view
and the panel (next to JupyterLab's log in the test's temporary folder; with
``UPDATE_SCREENSHOTS=1``, into ``docs/images`` for README) and measures each
update's render time in the page: from the message's arrival to the end of the
style and layout it causes (forced at the end of the update, as before a paint).
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"
ROOT = pathlib.Path(__file__).resolve().parent.parent
DOC_IMAGES = ROOT / "docs" / "images"

if not os.path.exists(CHROMIUM):
    pytest.skip(f"no browser: {CHROMIUM} is missing (apt-get install -y chromium)",
                allow_module_level=True)
playwright_sync = pytest.importorskip("playwright.sync_api",
                                      reason="needs playwright (pip install playwright)")
pytest.importorskip("jupyterlab", reason="needs jupyterlab (pip install jupyterlab)")

CELLS = [
    "import jray\njray.init(num_cpus=2)",
    "jray.dashboard(height=320)",
    "@jray.remote\ndef square(x):\n    return x * x\n\n"
    "@jray.remote\ndef total(*xs):\n    return sum(xs)\n\n"
    "@jray.remote(max_retries=0)\ndef broken():\n    raise ValueError('broken on purpose')",
    "parts = [square.remote(i) for i in range(4)]\nresult = total.remote(*parts)\n"
    "oops = broken.remote()\nbig = jray.put(bytes(2_000_000))",
    "jray.get(result)",
]


def _notebook(path: pathlib.Path) -> None:
    cells = [{"cell_type": "code", "metadata": {}, "source": src, "outputs": [],
              "execution_count": None, "id": f"cell-{i}"} for i, src in enumerate(CELLS)]
    nb = {"cells": cells, "metadata": {"kernelspec": {"name": "python3",
                                                      "display_name": "Python 3",
                                                      "language": "python"}},
          "nbformat": 4, "nbformat_minor": 5}
    path.write_text(json.dumps(nb))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def lab(tmp_path: pathlib.Path) -> Iterator[dict[str, Any]]:
    home = tmp_path / "home"
    cfg = tmp_path / "config"
    (cfg / "labconfig").mkdir(parents=True)
    (cfg / "labconfig" / "page_config.json").write_text(json.dumps(
        {"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": True}}))
    root = tmp_path / "work"
    root.mkdir()
    home.mkdir()
    _notebook(root / "views.ipynb")
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(cfg), JUPYTER_RUNTIME_DIR=str(tmp_path / "rt"),
               JUPYTERLAB_SETTINGS_DIR=str(tmp_path / "settings"),
               JUPYTERLAB_WORKSPACES_DIR=str(tmp_path / "ws"), HOME=str(home))
    port, token = _free_port(), "jray-test-token"
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", f"--ServerApp.port={port}",
           "--ServerApp.ip=127.0.0.1", "--ServerApp.port_retries=0",
           f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
           "--LabApp.expose_app_in_browser=True"]
    if os.geteuid() == 0:
        cmd.append("--allow-root")
    log = open(tmp_path / "lab.log", "w")  # noqa: SIM115 (closed in the finally below)
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError("JupyterLab did not start:\n"
                                         + (tmp_path / "lab.log").read_text()[-3000:]) from None
                time.sleep(0.2)
        yield {"base": base, "token": token, "log": tmp_path / "lab.log"}
    finally:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait(10)
        log.close()
        shutil.rmtree(tmp_path / "rt", ignore_errors=True)


def _wait_for_kernel(page: Any, timeout: float = 60) -> None:
    """Accept the "Select Kernel" dialog if it shows; wait until the notebook has a kernel."""
    has_kernel = ("(() => { const w = window.jupyterapp.shell.currentWidget;"
                  " return !!(w && w.sessionContext && w.sessionContext.session"
                  " && w.sessionContext.session.kernel"
                  " && w.sessionContext.session.kernel.status === 'idle'); })()")
    deadline = time.monotonic() + timeout
    while True:
        accept = page.locator(".jp-Dialog button.jp-mod-accept")
        if accept.count():
            accept.first.click()
        elif page.evaluate(has_kernel):
            return
        assert time.monotonic() < deadline, "the notebook got no kernel"
        page.wait_for_timeout(200)


SPEED_CELL = (
    "import asyncio, time\n@jray.remote\ndef tiny(i):\n    return i\n\n"
    "t0 = time.monotonic()\nheld = []\n"
    "for _ in range(100):  # 10,000 small tasks over about 10 s, the event loop free between\n"
    "    held.extend(tiny.remote(i) for i in range(100))\n"
    "    await asyncio.sleep(0.1)\n"
    "done = len(jray.get(held))\nheld = None\nprint('submitted in', time.monotonic() - t0)")


BLOCKING_CELL = (
    "import time\n@jray.remote\ndef nap(s):\n    time.sleep(s)\n    return s\n\n"
    "more = [square.remote(i) for i in range(10, 13)]\njray.get(nap.remote(8.0))")
KERNEL_STATUS = "window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.status"


def test_the_panel_ships_prebuilt_and_enabled() -> None:
    out = subprocess.run([sys.executable, "-m", "jupyterlab.labextensions", "list"],
                         capture_output=True, text=True, timeout=120)
    line = next((ln for ln in (out.stdout + out.stderr).splitlines()
                 if "jray-labextension" in ln), "")
    assert "enabled" in line and "OK" in line, out.stdout + out.stderr


def _p95(xs: list[float]) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(0.95 * len(xs)))]



@contextlib.contextmanager
def lab_page(lab: dict[str, Any], timeout_ms: int) -> Iterator[Any]:
    """A chromium page on ``views.ipynb`` in the test's JupyterLab, its kernel up; if
    the test fails, a screenshot (``failure.png``) and the end of the server's log."""
    with playwright_sync.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM,
                                     args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(timeout_ms)
            try:
                page.goto(f"{lab['base']}/lab/tree/views.ipynb?reset&token={lab['token']}")
                page.wait_for_function("window.jupyterapp && window.jupyterapp.commands")
                _wait_for_kernel(page)
                yield page
            except Exception:
                page.screenshot(path=str(lab["log"].parent / "failure.png"))
                print(lab["log"].read_text()[-4000:])
                raise
        finally:
            browser.close()


@pytest.mark.timeout(400)
def test_panel_and_inline_view_show_the_dag_states_edges_and_tracebacks(
        lab: dict[str, Any]) -> None:
    with lab_page(lab, 40_000) as page:
        # the panel: a side-bar tab titled "jray"; the kernel has no cluster yet
        page.locator(".jp-SideBar [title='jray']").first.click()
        panel = page.locator("#jray-views-panel")
        panel.wait_for()
        page.wait_for_function("document.querySelector('#jray-views-panel .jray-panel-status')"
                               ".textContent.includes('no jray cluster')")
        page.evaluate("void window.jupyterapp.commands.execute('notebook:run-all-cells')")
        for scope in (".jray-views:not(#jray-views-panel *)", "#jray-views-panel"):
            page.wait_for_function(
                f"document.querySelectorAll(`{scope} circle[data-state=finished]`).length"
                f" >= 5 && document.querySelectorAll(`{scope} circle[data-state=failed]`)"
                f".length >= 1")
            assert page.locator(f"{scope} path.jv-e").count() == 4  # square_i -> total
            rows = page.locator(f"{scope} table[data-jv=tasks] tbody tr")
            assert rows.count() == 6
            assert any("total" in t and "finished" in t for t in rows.all_inner_texts())
            page.locator(f"{scope} circle[data-state=failed]").click()
            page.wait_for_function(
                f"document.querySelector(`{scope} [data-jv=detail]`).textContent"
                f".includes('ValueError: broken on purpose')")
            assert "cell: In [" in page.locator(f"{scope} [data-jv=detail]").inner_text()
            page.wait_for_function(
                f"[...document.querySelectorAll(`{scope} [data-jv=objects] td`)]"
                f".some(td => td.textContent === 'big')")
        inline = page.locator(".jray-views:not(#jray-views-panel *)").first
        images = DOC_IMAGES if os.environ.get("UPDATE_SCREENSHOTS") else lab["log"].parent
        images.mkdir(parents=True, exist_ok=True)
        inline.screenshot(path=str(images / "inline-view.png"))
        panel.screenshot(path=str(images / "panel.png"))
        # clicking a task in the panel selects and scrolls to the cell that made it
        page.locator("#jray-views-panel circle[data-state=finished]").first.click()
        page.wait_for_function(
            "document.querySelector('.jp-Notebook .jp-Cell.jp-mod-active')"
            ".textContent.includes('square.remote(i)')")
        _updates_while_a_cell_blocks(page)
        speed = _speed(page)
        (lab["log"].parent / "speed.json").write_text(json.dumps(speed))
        print("view speed:", json.dumps(speed))


def _updates_while_a_cell_blocks(page: Any) -> None:
    """A cell blocked in ``jray.get`` holds the kernel; both views still show its tasks
    finishing and running before it returns."""
    page.evaluate("(code) => { const nb = window.jupyterapp.shell.currentWidget;"
                  " window.__jrayBlockedDone = false;"
                  " nb.sessionContext.session.kernel.requestExecute({code}).done"
                  ".then(() => { window.__jrayBlockedDone = true; }); }", BLOCKING_CELL)
    for scope in (".jray-views:not(#jray-views-panel *)", "#jray-views-panel"):
        titles = f"[...document.querySelectorAll(`{scope} circle[data-task-id] title`)]"
        page.wait_for_function(
            f"{titles}.some(t => t.textContent === 'nap (running)') &&"
            f" {titles}.filter(t => t.textContent === 'square (finished)').length >= 7",
            timeout=20_000)
    assert page.evaluate("window.__jrayBlockedDone") is False, "the cell ended first"
    assert page.evaluate(KERNEL_STATUS) == "busy"
    page.wait_for_function("window.__jrayBlockedDone === true", timeout=60_000)


def _finished(page: Any) -> int:
    text = page.evaluate("(document.querySelector('#jray-views-panel [data-count=finished]')"
                         " || {}).textContent || 'finished 0'")
    return int(text.split()[-1])


def _speed(page: Any) -> dict[str, Any]:
    """Run 10,000 small tasks over about 10 s; the render time of each update, per view."""
    page.evaluate("for (const v of [globalThis.__jrayViews[0], window.__jrayPanelViews])"
                  " { v.renderTimes.length = 0; v.applyTimes.length = 0; }")
    page.wait_for_function(  # the blocked cell's last patch has arrived
        "document.querySelector('#jray-views-panel [data-count=running]') === null")
    expected = _finished(page) + 10_000
    page.evaluate("(code) => { const nb = window.jupyterapp.shell.currentWidget;"
                  " return nb.sessionContext.session.kernel.requestExecute({code}).done; }",
                  SPEED_CELL)
    page.wait_for_function(
        "document.querySelectorAll('#jray-views-panel [data-count=finished]').length &&"
        " document.querySelector('#jray-views-panel [data-count=finished]').textContent"
        f" === 'finished {expected}'", timeout=120_000)
    inline = page.evaluate("globalThis.__jrayViews[0].renderTimes")
    panel = page.evaluate("window.__jrayPanelViews.renderTimes")
    panel_apply = page.evaluate("window.__jrayPanelViews.applyTimes")
    heap = page.evaluate("performance.memory ? performance.memory.usedJSHeapSize : null")
    drawn = page.locator("#jray-views-panel circle[data-task-id]").count()
    # the task table keeps the newest rows in the page and says so; its filter still works
    rows = page.locator("#jray-views-panel table[data-jv=tasks] tbody tr")
    assert rows.count() == 100
    assert "the newest 100 of 5000 tasks" in page.locator(
        "#jray-views-panel [data-jv=tasks-note]").inner_text()
    box = page.locator("#jray-views-panel input[type=search]")
    box.fill("no task is called this")
    assert rows.count() == 0
    box.fill("tiny")
    assert rows.count() == 100 and all("tiny" in t for t in rows.all_inner_texts())
    box.fill("")
    return {"inline_updates": len(inline), "inline_p95_ms": round(_p95(inline), 1),
            "panel_updates": len(panel), "panel_p95_ms": round(_p95(panel), 1),
            "panel_apply_p95_ms": round(_p95(panel_apply), 1),
            "panel_max_ms": round(max(panel), 1), "heap_mb": round(heap / 2**20, 1)
            if heap else None, "panel_nodes_drawn": drawn}
