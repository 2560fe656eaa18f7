"""What ipyparallel users expect of the magics, in a real kernel: help, engines' errors as
they happen, pull from all, targets, progress options, output caps, late results, retries."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from jupyter_kernel import Kernel, assert_no_jray_processes, kernel, no_leaks  # noqa: F401  (fixtures)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]




def _page(kernel: Kernel, code: str) -> str:
    ex = kernel.execute(code)
    return "".join(p["data"].get("text/plain", "") for p in ex.reply["content"]["payload"]
                   if p.get("source") == "page")


def test_magics_have_full_help(kernel: Kernel) -> None:
    remote = _page(kernel, "%%remote?")
    for word in ("--no-block", "--retry-exceptions", "--targets", "Examples", "%jray result"):
        assert word in remote
    line = _page(kernel, "%jray?")
    for word in ("init", "engines", "pull", "result", "Examples"):
        assert word in line


def test_engine_errors_show_as_they_happen_and_pull_all(kernel: Kernel) -> None:
    kernel.execute("%jray engines 2")
    msg_id = kernel.kc.execute(
        "%%remote --engines all\nimport time\nname = __import__('os').getpid()\n"
        "if ENGINE_NO == 0:\n    raise ValueError('engine zero fails at once')\n"
        "time.sleep(5)\nprint('slow one done')")
    # before the cell runs, each engine learns its number
    err = kernel.wait_for(msg_id, lambda m: m["msg_type"] == "stream"
                          and "engine zero fails" in m["content"]["text"], 30)
    seen_at = time.monotonic()
    text = err["content"]["text"]
    assert text.startswith("[engine-0] ") and "engine-0: " not in text
    done = kernel.wait_for(msg_id, lambda m: m["msg_type"] == "stream"
                           and "slow one done" in m["content"]["text"], 30)
    assert done["content"]["text"].startswith("[engine-1] ")
    assert time.monotonic() - seen_at > 2  # the error came first, while engine-1 slept
    reply = kernel.wait_for(msg_id, lambda m: m["msg_type"] == "error", 10)
    assert "engine-0" in reply["content"]["evalue"]
    kernel.settle(msg_id)
    kernel.execute("%jray pull all name")
    pids = kernel.value("name")
    assert len(pids) == 2 and pids[0] != pids[1]
    kernel.execute("%jray pull 1: name")
    assert kernel.value("name") == pids[1:]


@pytest.fixture(autouse=True, scope="module")
def _numbered(kernel: Kernel) -> None:
    kernel.execute("%jray engines 2")
    kernel.execute("%%remote --targets 0\nENGINE_NO = 0")
    kernel.execute("%%remote --targets 1\nENGINE_NO = 1")


def test_targets_select_engines(kernel: Kernel) -> None:
    out = kernel.execute("%%remote --targets 0,1\nprint(ENGINE_NO)").stream()
    assert "[engine-0] 0" in out and "[engine-1] 1" in out
    assert kernel.execute("%%remote --targets 1:\nENGINE_NO").result_text() == "1"
    ex = kernel.execute("%%remote --targets 7\nx = 1", allow_error=True)
    assert ex.reply["content"]["ename"] == "UsageError" and "--targets" in \
        ex.reply["content"]["evalue"]


def test_interrupt_lists_only_engines_still_running(kernel: Kernel) -> None:
    msg_id = kernel.kc.execute("%%remote --engines all\nimport time\n"
                               "time.sleep(0 if ENGINE_NO == 0 else 30)\nprint('woke')")
    kernel.wait_for(msg_id, lambda m: m["msg_type"] == "stream"
                    and "woke" in m["content"]["text"], 30)
    kernel.interrupt()
    msg = kernel.wait_for(msg_id, lambda m: m["msg_type"] == "stream"
                          and "cancelled" in m["content"]["text"], 15)
    assert "engine-1" in msg["content"]["text"] and "engine-0" not in msg["content"]["text"]
    err = kernel.wait_for(msg_id, lambda m: m["msg_type"] == "error", 15)
    assert err["content"]["ename"] == "KeyboardInterrupt"
    kernel.settle(msg_id)


def _bars(kernel: Kernel, code: str) -> int:
    ex = kernel.execute(code)
    return len([m for m in ex.of_type("comm_open")
                if m["content"]["data"]["state"].get("_model_name") == "IntProgressModel"])


def test_progress_after_and_no_progress(kernel: Kernel) -> None:
    assert _bars(kernel, "%%remote --no-progress\nimport time\ntime.sleep(1.5)") == 0
    assert _bars(kernel, "%%remote --progress-after 0.2\nimport time\ntime.sleep(0.8)") == 1


def test_flooding_output_is_capped_with_a_tail(kernel: Kernel) -> None:
    ex = kernel.execute("%%remote\nfor i in range(20000):\n    print('line', i)", timeout=90)
    out = ex.stream()
    assert "line 0\n" in out and "line 4999\n" in out and "line 5000\n" not in out
    assert "14900 lines of output dropped after the first 5000; the last 100 follow" in out, \
        [ln for ln in out.splitlines() if "jray" in ln]
    assert out.rstrip().endswith("line 19999") and "line 19900\n" in out


def test_result_of_a_no_block_cell_later(kernel: Kernel) -> None:
    kernel.execute("%%remote --no-block --name later\nimport time\ntime.sleep(0.5)\n6 * 7")
    ex = kernel.execute("%jray result later")
    assert any(m["content"]["data"].get("text/plain") == "42" for m in ex.of_type("display_data"))
    ex = kernel.execute("%jray result nothing_by_that_name", allow_error=True)
    assert ex.reply["content"]["ename"] == "UsageError" and "later" in \
        ex.reply["content"]["evalue"]


def test_retry_exceptions(kernel: Kernel, tmp_path: Path) -> None:
    marker = tmp_path / "tried"
    cell = (f"%%remote {{flags}}\nimport os\nif not os.path.exists({str(marker)!r}):\n"
            f"    open({str(marker)!r}, 'w').close()\n    raise RuntimeError('first try')\n"
            "attempt = 'second'")
    ex = kernel.execute(cell.format(flags="--retries 1"), allow_error=True)
    assert ex.reply["content"]["ename"] == "RuntimeError"  # --retries alone: crashes only
    marker.unlink()
    kernel.execute(cell.format(flags="--retries 1 --retry-exceptions"))
    assert kernel.value("attempt") == "second"


def test_ipython_display_in_a_remote_cell_renders(kernel: Kernel) -> None:
    ex = kernel.execute("%%remote\nfrom IPython.display import display, HTML\n"
                        "display(HTML('<i>rich</i>'))\nimport IPython.display as D\n"
                        "D.display(HTML('<b>two</b>'))")
    html = [m["content"]["data"].get("text/html") for m in ex.of_type("display_data")]
    assert html == ["<i>rich</i>", "<b>two</b>"]
    assert "IPython.core.display.HTML object" not in ex.stream()


def test_reload_ext_says_it_stopped_its_cluster() -> None:
    k = Kernel()
    try:
        k.execute("%load_ext jray\n%jray init --num-cpus 1")
        ex = k.execute("%reload_ext jray")
        assert "shut down the cluster it started" in ex.stream("stderr")
        assert k.execute("%%remote\nback = 1\nback").result_text() == "1"
    finally:
        k.shutdown()
