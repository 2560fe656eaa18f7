"""A full, read-only or missing spill disk, and a full /dev/shm (issue 10, items 3 and 8).

Small disks are tmpfs mounts in a private mount namespace (``unshare -m``), so
nothing outside the test sees them; each probe is a driver script run inside one.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import jray
from jray.exceptions import InitError

pytestmark = pytest.mark.integration


def _can_unshare() -> str:
    """Why a private mount namespace with a tmpfs cannot be made here ("" if it can)."""
    if shutil.which("unshare") is None:
        return "needs unshare(1) for a private mount namespace (not installed)"
    probe = subprocess.run(["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=1m tmpfs /mnt"],
                           capture_output=True, text=True, timeout=30)
    if probe.returncode != 0:
        return f"needs unshare -m and mount (root): {probe.stderr.strip()}"
    return ""


def _in_namespace(tmp_path: Path, mounts: str, script: str, *args: str) -> dict[str, object]:
    """Run ``script`` after ``mounts`` (shell) in a private mount namespace; its JSON line."""
    path = tmp_path / "probe.py"
    path.write_text(textwrap.dedent(script))
    why = _can_unshare()
    if why:
        pytest.skip(why)
    cmd = f'{mounts} && exec "$0" "$@"'
    proc = subprocess.run(["unshare", "-m", "sh", "-c", cmd, sys.executable, str(path), *args],
                          capture_output=True, text=True, timeout=240, cwd=os.getcwd())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


#: in a script: ``summary`` once the head gave failed writes' reservations back. The
#: owner hears of a failed result straight from the worker, the head (which holds
#: the reservation) a moment later, on another connection: wait, bounded.
SUMMARY_AFTER_RESERVATIONS = """deadline = time.monotonic() + 10
    while True:
        summary = next(iter(jray.state.store_summary().values()))
        if summary["reserved"] == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.02)"""


FULL_SPILL = """
    import glob, json, os, sys, time
    import numpy as np
    import jray
    from jray.exceptions import ObjectStoreFullError
    from jray._private.api import _Session
    spill = sys.argv[1]
    jray.init(num_cpus=1, object_store_memory=64 << 20, spill_dir=spill)
    prefix = _Session.cluster.shm_prefix
    arrays, refs, error = [], [], ""
    for i in range(12):  # 16 MiB each: 4 fit in memory, 3 on the 50 MiB disk
        a = np.full(2 << 20, i, dtype=np.int64)
        try:
            refs.append(jray.put(a))
            arrays.append(a)
        except ObjectStoreFullError as exc:
            error = str(exc)
            break
    intact = all(np.array_equal(jray.get(r, timeout=60), a) for r, a in zip(refs, arrays))

    @jray.remote
    def add(x, y):
        return x + y

    alive = jray.get(add.remote(1, 2), timeout=60) == 3
    SUMMARY_AFTER_RESERVATIONS
    del refs
    jray.shutdown()
    left = glob.glob(f"/dev/shm/{prefix}*")
    print(json.dumps({"error": error, "stored": len(arrays), "intact": intact,
                      "alive": alive, "reserved": summary["reserved"], "left": left}))
""".replace("SUMMARY_AFTER_RESERVATIONS", SUMMARY_AFTER_RESERVATIONS)


@pytest.mark.timeout(300)
def test_full_spill_disk_fails_the_put_and_keeps_the_cluster(tmp_path: Path) -> None:
    disk = tmp_path / "disk"
    disk.mkdir()
    out = _in_namespace(tmp_path, f"mount -t tmpfs -o size=50m tmpfs {disk}", FULL_SPILL,
                        str(disk))
    error = str(out["error"])
    assert "spilling to" in error and str(disk) in error, out
    assert "No space left" in error, out
    assert 4 <= int(out["stored"]) < 12  # type: ignore[call-overload]
    assert out["intact"] and out["alive"], out
    assert out["reserved"] == 0 and out["left"] == [], out


READ_ONLY_LATER = """
    import json, subprocess, sys
    import numpy as np
    import jray
    from jray.exceptions import ObjectStoreFullError
    spill = sys.argv[1]
    jray.init(num_cpus=1, object_store_memory=64 << 20, spill_dir=spill)
    subprocess.run(["mount", "-o", "remount,ro", spill], check=True)
    arrays, refs, error = [], [], ""
    for i in range(8):
        a = np.full(2 << 20, i, dtype=np.int64)
        try:
            refs.append(jray.put(a))
            arrays.append(a)
        except ObjectStoreFullError as exc:
            error = str(exc)
            break
    intact = all(np.array_equal(jray.get(r, timeout=60), a) for r, a in zip(refs, arrays))
    del refs
    jray.shutdown()
    print(json.dumps({"error": error, "intact": intact}))
"""


@pytest.mark.timeout(300)
def test_spill_disk_gone_read_only_fails_the_put(tmp_path: Path) -> None:
    disk = tmp_path / "disk"
    disk.mkdir()
    out = _in_namespace(tmp_path, f"mount -t tmpfs -o size=50m tmpfs {disk}", READ_ONLY_LATER,
                        str(disk))
    assert "Read-only file system" in str(out["error"]) and str(disk) in str(out["error"]), out
    assert out["intact"], out


READ_ONLY_AT_INIT = """
    import json, sys
    import jray
    from jray.exceptions import InitError
    try:
        jray.init(num_cpus=1, spill_dir=sys.argv[1])
        print(json.dumps({"error": ""}))
        jray.shutdown()
    except InitError as exc:
        print(json.dumps({"error": str(exc), "initialized": jray.is_initialized()}))
"""


@pytest.mark.timeout(120)
def test_read_only_spill_dir_is_an_init_error(tmp_path: Path) -> None:
    disk = tmp_path / "disk"
    disk.mkdir()
    out = _in_namespace(tmp_path, f"mount -t tmpfs -o ro,size=1m tmpfs {disk}",
                        READ_ONLY_AT_INIT, str(disk))
    assert "spill_dir" in str(out["error"]) and str(disk) in str(out["error"]), out
    assert out["initialized"] is False


def test_spill_dir_that_is_not_a_directory_is_an_init_error(tmp_path: Path) -> None:
    afile = tmp_path / "a-file"
    afile.write_text("x")
    with pytest.raises(InitError, match="spill_dir .*a-file.* is not a directory"):
        jray.init(num_cpus=1, spill_dir=str(afile))
    with pytest.raises(InitError, match="cannot be made"):
        jray.init(num_cpus=1, spill_dir=str(afile / "sub"))
    assert not jray.is_initialized()


def test_missing_spill_dir_is_made_private(tmp_path: Path) -> None:
    base = tmp_path / "new" / "spill"
    jray.init(num_cpus=1, spill_dir=str(base))
    try:
        assert base.is_dir()
        (inner,) = list(base.iterdir())
        assert inner.name.startswith("jray-spill-") and (inner.stat().st_mode & 0o777) == 0o700
    finally:
        jray.shutdown()
    assert list(base.iterdir()) == []


FULL_SHM = """
    import glob, json, os, time
    import numpy as np
    import jray
    from jray.exceptions import ObjectStoreFullError
    from jray._private.api import _Session
    jray.init(num_cpus=1, object_store_memory=512 << 20)  # more than /dev/shm holds
    prefix = _Session.cluster.shm_prefix
    refs, error, kind = [], "", ""
    for i in range(8):  # 16 MiB each into a 64 MiB /dev/shm
        try:
            refs.append(jray.put(np.full(2 << 20, i, dtype=np.int64)))
        except Exception as exc:
            error, kind = str(exc), type(exc).__name__
            break
    stored = len(refs)

    @jray.remote
    def big():  # a task result that does not fit either
        return np.full(2 << 20, 7, dtype=np.int64)

    try:
        jray.get(big.remote(), timeout=60)
        task_error = ""
    except Exception as exc:
        task_error = f"{type(exc).__name__}: {exc}"
    files = sorted(glob.glob(f"/dev/shm/{prefix}*"))
    sizes = [os.path.getsize(f) for f in files]
    SUMMARY_AFTER_RESERVATIONS
    del refs  # room again: the next put goes to shared memory, not to disk
    time.sleep(0.5)
    again = jray.put(np.ones(2 << 20))
    ok = float(jray.get(again, timeout=60).sum()) == 2 << 20
    after = next(iter(jray.state.store_summary().values()))
    del again
    jray.shutdown()
    print(json.dumps({"kind": kind, "error": error, "task_error": task_error,
                      "stored": stored, "files": len(files),
                      "sizes": sizes, "reserved": summary["reserved"], "ok": ok,
                      "spills": after["spills"], "left": glob.glob(f"/dev/shm/{prefix}*")}))
""".replace("SUMMARY_AFTER_RESERVATIONS", SUMMARY_AFTER_RESERVATIONS)


@pytest.mark.timeout(300)
def test_full_dev_shm_is_store_full_without_leftovers(tmp_path: Path) -> None:
    out = _in_namespace(tmp_path, "mount -t tmpfs -o size=64m tmpfs /dev/shm", FULL_SHM)
    assert out["kind"] == "ObjectStoreFullError" and "/dev/shm" in str(out["error"]), out
    assert "ObjectStoreFullError" in str(out["task_error"]), out  # a task's result too
    stored = int(out["stored"])  # type: ignore[call-overload]
    assert 1 <= stored < 8
    assert out["files"] == stored, out  # no partial segment left behind
    assert all(s >= 16 << 20 for s in out["sizes"]), out  # type: ignore[attr-defined]
    assert out["reserved"] == 0, out  # the failed put gave its reservation back
    assert out["ok"] and out["spills"] == 0 and out["left"] == [], out
