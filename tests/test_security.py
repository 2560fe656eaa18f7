"""Other local users and the object store: planted pool files, spill directories,
altered or truncated segments (issue 10, items 1, 2 and the corrupt-segment part of 9).

The cross-user tests run the attacker (and, for one test, the victim) as real
second users, created for the session with ``useradd`` and removed after.
"""

from __future__ import annotations

import json
import os
import pickle
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import jray
from jray._private import shm
from jray._private.api import _Session
from jray.exceptions import ObjectLostError
from jray.testing import eventually

pytestmark = pytest.mark.integration
MiB = 1 << 20
SECRET = b"SECRET42"


def _secret_array(nbytes: int) -> np.ndarray:
    return np.frombuffer(SECRET * (nbytes // len(SECRET)), dtype=np.uint8).copy()


@pytest.fixture(scope="session")
def users() -> Iterator[dict[str, pwd.struct_passwd]]:
    """Two fresh unprivileged users, ``attacker`` and ``victim``, removed afterwards."""
    if os.geteuid() != 0:
        pytest.skip("needs root to create second users with useradd (not root here)")
    if shutil.which("useradd") is None or shutil.which("userdel") is None:
        pytest.skip("needs useradd/userdel to create second users (not installed)")
    tag = uuid.uuid4().hex[:6]
    made: dict[str, pwd.struct_passwd] = {}
    try:
        for role in ("attacker", "victim"):
            name = f"jr{role[:3]}{tag}"
            subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin",
                            name], check=True, capture_output=True, timeout=30)
            made[role] = pwd.getpwnam(name)
        yield made
    finally:
        for entry in made.values():
            subprocess.run(["userdel", entry.pw_name], capture_output=True, timeout=30)
        while _MIRROR:
            shutil.rmtree(_MIRROR.pop(), ignore_errors=True)


#: A copy of what ``import jray`` needs, readable by everyone, made when this checkout
#: and venv are not (a checkout under root's 0700 home); removed with the users.
_MIRROR: list[str] = []
_MIRRORED = ("jray", "zmq", "pyzmq.libs", "cloudpickle", "numpy", "numpy.libs", "psutil")


def _env() -> dict[str, str]:
    """What a second user's Python needs to import jray: this venv's packages and the repo."""
    site = [p for p in sys.path if p.endswith("site-packages")]
    path = _MIRROR or [os.getcwd(), *site]
    return {"PATH": "/usr/bin:/bin", "HOME": "/tmp", "PYTHONPATH": os.pathsep.join(path)}


def _make_mirror() -> None:
    """Copy jray and its compiled dependencies where any user can read them."""
    base = tempfile.mkdtemp(prefix="jray-test-site-")
    os.chmod(base, 0o755)
    roots = [str(Path(jray.__file__).parent.parent)]
    roots += [p for p in sys.path if p.endswith("site-packages")]
    for name in _MIRRORED:
        src = next((os.path.join(r, name) for r in roots if os.path.isdir(os.path.join(r, name))),
                   None)
        if src is not None:
            shutil.copytree(src, os.path.join(base, name), ignore=shutil.ignore_patterns(
                "__pycache__", "tests"))
    for dirpath, dirnames, filenames in os.walk(base):
        for d in dirnames:
            os.chmod(os.path.join(dirpath, d), 0o755)
        for f in filenames:
            os.chmod(os.path.join(dirpath, f), 0o644 if not f.endswith(".so") else 0o755)
    _MIRROR.append(base)


def _python_for(user: pwd.struct_passwd, imports: str) -> str:
    """An interpreter ``user`` can run that imports ``imports``, or skip the test.

    Tried as is first; then, for a checkout other users cannot read, with a
    readable copy of the packages and the system's Python of the same version.
    """
    system = "/usr/bin/python3"
    same_version = os.path.exists(system) and subprocess.run(
        [system, "-c", "import sys; print(sys.version_info[:2])"], capture_output=True,
        text=True, timeout=30).stdout.strip() == str(tuple(sys.version_info[:2]))
    for attempt in range(2):
        for exe in (sys.executable, os.path.realpath(sys.executable), system):
            try:
                ok = subprocess.run([exe, "-c", f"import {imports}"], user=user.pw_uid,
                                    group=user.pw_gid, extra_groups=[], capture_output=True,
                                    timeout=60, env=_env(), cwd="/").returncode == 0
            except OSError:
                ok = False
            if ok:
                return exe
        if attempt == 0 and not _MIRROR and same_version:
            _make_mirror()
    pytest.skip(f"no Python interpreter that user {user.pw_name} may run imports {imports} "
                f"({sys.executable} is not readable by other users, and {system} is missing "
                f"or another Python version)")


def _run_as(user: pwd.struct_passwd, code: str, *args: str) -> dict[str, object]:
    """Run ``code`` with ``args`` as ``user``; its last output line, parsed as JSON."""
    proc = subprocess.run(
        [_python_for(user, "os"), "-c", textwrap.dedent(code), *args], user=user.pw_uid,
        group=user.pw_gid, extra_groups=[], cwd="/", capture_output=True, text=True,
        timeout=60, env=_env(),
    )
    return _json_out(proc)


def _json_out(proc: subprocess.CompletedProcess[str]) -> dict[str, object]:
    assert proc.returncode == 0, proc.stderr
    out: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


# --- item 2: a planted pool file ------------------------------------------------------
PLANT = """
    import os, sys
    path = sys.argv[1]
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o666)
    os.fchmod(fd, 0o666)
    os.write(fd, b"A" * int(sys.argv[2]))
    os.close(fd)
    print("{}")
"""


@pytest.mark.timeout(120)
def test_planted_pool_file_is_never_claimed(users: dict[str, pwd.struct_passwd]) -> None:
    jray.init(num_cpus=1, object_store_memory=256 * MiB)
    planted = ""
    try:
        cl = _Session.cluster
        assert cl is not None
        pool = shm.pool_prefix(cl.shm_prefix, cl.node_id)
        planted = shm.segment_path(shm.pool_name(pool, 8 * MiB, 999))
        atk = users["attacker"]
        _run_as(atk, PLANT, planted, str(8 * MiB))
        secret = _secret_array(4 * MiB)
        ref = jray.put(secret)
        got = jray.get(ref, timeout=30)
        assert np.array_equal(got, secret)
        # the planted file was left alone: still the attacker's, still its bytes
        st = os.stat(planted)
        assert st.st_uid == atk.pw_uid
        with open(planted, "rb") as f:
            assert f.read() == b"A" * (8 * MiB)
        # the object lives in a segment of the driver's user that nobody else can open
        seg = os.stat(shm.segment_path(cl.shm_prefix + ref.hex()))
        assert seg.st_uid == os.geteuid() and stat.S_IMODE(seg.st_mode) == 0o600
        del got
    finally:
        jray.shutdown()
        if planted and os.path.exists(planted):
            os.unlink(planted)


VICTIM = """
    import json, sys
    import numpy as np
    import jray
    from jray._private import shm
    from jray._private.api import _Session
    import glob, time
    from jray._private import serialization as S
    jray.init(num_cpus=1, object_store_memory=256 << 20)
    cl = _Session.cluster
    arr = np.arange(4 << 17, dtype=np.int64)  # 4 MiB
    size = shm.segment_size(*S.dumps_oob(arr))
    print(json.dumps({"pool": shm.pool_prefix(cl.shm_prefix, cl.node_id), "size": size}),
          flush=True)
    sys.stdin.readline()  # the attacker plants its files now
    refs = [jray.put(arr) for _ in range(3)]
    ok = all(np.array_equal(jray.get(r, timeout=30), arr) for r in refs)
    del refs  # freed: pooled (or unlinked where a planted name is in the way)
    pool = shm.pool_prefix(cl.shm_prefix, cl.node_id)
    def left():
        return [p for p in glob.glob(f"/dev/shm/{cl.shm_prefix}*")
                if not p.startswith("/dev/shm/" + pool)]
    deadline = time.monotonic() + 10
    while left() and time.monotonic() < deadline:
        time.sleep(0.05)
    leftover = left()
    jray.shutdown()
    print(json.dumps({"ok": ok, "leftover": leftover}), flush=True)
"""


@pytest.mark.timeout(120)
def test_non_root_victim_puts_and_shuts_down_past_planted_files(
        users: dict[str, pwd.struct_passwd]) -> None:
    vic, atk = users["victim"], users["attacker"]
    exe = _python_for(vic, "jray, numpy")
    proc = subprocess.Popen(
        [exe, "-c", textwrap.dedent(VICTIM)], user=vic.pw_uid, group=vic.pw_gid,
        extra_groups=[], cwd="/tmp", stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, env=_env())
    planted: list[str] = []
    try:
        assert proc.stdout is not None and proc.stdin is not None
        first = proc.stdout.readline()
        assert first, proc.stderr.read() if proc.stderr else ""
        pool, seg = json.loads(first)["pool"], json.loads(first)["size"]
        names = [shm.pool_name(pool, size, size) for size in (4 * MiB + 4096, 8 * MiB)]
        names += [shm.pool_name(pool, seg, n) for n in (1, 2, 3)]  # where freed ones go
        for name in names:
            size = int(name[len(pool):].split("-")[0])
            path = shm.segment_path(name)
            planted.append(path)
            _run_as(atk, PLANT, path, str(size))
        proc.stdin.write("go\n")
        proc.stdin.flush()
        out, err = proc.communicate(timeout=90)
        assert proc.returncode == 0, err
        assert json.loads(out.strip().splitlines()[-1]) == {"ok": True, "leftover": []}
        for path in planted:  # untouched
            with open(path, "rb") as f:
                assert set(f.read()) == {ord("A")}
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=30)
        for path in planted:
            if os.path.exists(path):
                os.unlink(path)


# --- item 1: the spill directory ------------------------------------------------------
SNOOP = """
    import json, os, sys
    base, squat = sys.argv[1], sys.argv[2]
    if squat:  # the name the spill directory used to have, made before the first spill
        os.mkdir(squat, 0o777); os.chmod(squat, 0o777)
        fd = os.open(os.path.join(squat, "spill-00001.bin"), os.O_CREAT | os.O_RDWR, 0o666)
        os.fchmod(fd, 0o666); os.close(fd)
        print(json.dumps({"squatted": squat})); sys.exit(0)
    found, denied, planted = 0, 0, 0
    for root, dirs, files in os.walk(base, onerror=lambda e: None):
        for d in dirs:
            try:
                os.listdir(os.path.join(root, d))
            except PermissionError:
                denied += 1
                try:
                    open(os.path.join(root, d, "planted"), "wb").close()
                    planted += 1
                except OSError:
                    pass
        for name in files:
            try:
                with open(os.path.join(root, name), "rb") as f:
                    found += f.read().count(b"SECRET42")
            except OSError:
                pass
    print(json.dumps({"found": found, "denied": denied, "planted": planted}))
"""


def _snoop(user: pwd.struct_passwd, base: str, squat: str = "") -> dict[str, object]:
    return _run_as(user, SNOOP, base, squat)


@pytest.mark.timeout(180)
def test_spilled_objects_are_private_in_a_shared_spill_dir(
        users: dict[str, pwd.struct_passwd]) -> None:
    base = tempfile.mkdtemp(prefix="jray-test-shared-", dir="/tmp")
    os.chmod(base, 0o1777)  # a directory everybody can write, like /tmp
    try:
        jray.init(num_cpus=1, object_store_memory=64 * MiB, spill_dir=base)
        try:
            cl = _Session.cluster
            assert cl is not None
            atk = users["attacker"]
            _snoop(atk, base, os.path.join(base, f"jray-spill-{cl.shm_prefix.strip('-')}"))
            arrays = [_secret_array(16 * MiB) for _ in range(6)]
            refs = [jray.put(a) for a in arrays]
            assert eventually(
                lambda: next(iter(jray.state.store_summary().values()))["spills"] >= 2, 30)
            seen = _snoop(atk, base)
            assert seen["found"] == 0, seen  # no secret byte readable by the attacker
            assert seen["planted"] == 0 and int(seen["denied"]) >= 1, seen  # type: ignore
            st = os.stat(cl.spill_dir)
            assert os.path.dirname(cl.spill_dir) == base
            assert st.st_uid == os.geteuid() and stat.S_IMODE(st.st_mode) == 0o700
            files = os.listdir(cl.spill_dir)
            assert files, "nothing was spilled"
            for name in files:
                fst = os.stat(os.path.join(cl.spill_dir, name))
                assert fst.st_uid == os.geteuid() and stat.S_IMODE(fst.st_mode) == 0o600
            for a, r in zip(arrays, refs):
                assert np.array_equal(jray.get(r, timeout=60), a)
        finally:
            jray.shutdown()
        assert not os.path.exists(cl.spill_dir)
    finally:
        shutil.rmtree(base, ignore_errors=True)


# --- item 1 and 9: altered, forged and truncated bytes ----------------------------------
class _RunsCode:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, ...]:
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture()
def small_cluster(tmp_path: Path) -> Iterator[Path]:
    jray.init(num_cpus=1, object_store_memory=64 * MiB, spill_dir=str(tmp_path))
    try:
        yield tmp_path
    finally:
        jray.shutdown()


def _segment(ref: jray.ObjectRef) -> str:
    cl = _Session.cluster
    assert cl is not None
    return shm.segment_path(cl.shm_prefix + ref.hex())


@pytest.mark.timeout(120)
def test_forged_segment_is_refused_before_unpickling(
        small_cluster: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    marker = tmp_path / "code-ran"
    ref = jray.put(np.ones(MiB // 4))  # 2 MiB: a segment
    path = _segment(ref)
    os.unlink(path)
    name = os.path.basename(path)
    evil = pickle.dumps(_RunsCode(str(marker)), 5) + b"\0" * (2 * MiB)
    with monkeypatch.context() as m:  # a writer that does not hold the session key
        m.setattr(shm, "_key", os.urandom(32), raising=False)
        shm.write_segment(name, evil, [])
    with pytest.raises(ObjectLostError, match=ref.hex()):
        jray.get(ref, timeout=30)
    assert not marker.exists()


@pytest.mark.timeout(120)
def test_altered_spill_file_is_refused(small_cluster: Path) -> None:
    refs = [jray.put(np.full(2 * MiB, i, dtype=np.int64)) for i in range(6)]  # 16 MiB each
    spilled = [p for p in small_cluster.glob("jray-spill-*/*") if p.stat().st_size]
    assert spilled, "nothing was spilled"
    data = bytearray(spilled[0].read_bytes())
    at = data.find(b"JRY2")
    assert at >= 0
    data[at + 48] ^= 0xFF  # one byte of the first object's pickle stream
    spilled[0].write_bytes(bytes(data))
    errors = []
    for r in refs:
        try:
            jray.get(r, timeout=60)
        except ObjectLostError as exc:
            errors.append(str(exc))
    assert len(errors) == 1 and "integrity" in errors[0], errors
    assert any(r.hex() in errors[0] for r in refs)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("cut", [0, 20, 4096])
def test_truncated_segment_is_object_lost(small_cluster: Path, cut: int) -> None:
    ref = jray.put(np.ones(MiB // 4))
    os.truncate(_segment(ref), cut)
    with pytest.raises(ObjectLostError, match=f"{ref.hex()}.*truncated"):
        jray.get(ref, timeout=30)


@pytest.mark.timeout(120)
def test_segment_others_can_access_is_refused(small_cluster: Path) -> None:
    ref = jray.put(np.ones(MiB // 4))
    os.chmod(_segment(ref), 0o644)
    with pytest.raises(ObjectLostError, match=f"{ref.hex()}.*group or others"):
        jray.get(ref, timeout=30)


# --- issue 9: one mapping per segment per process ------------------------------------------
def _mapped(path: str) -> bool:
    with open("/proc/self/maps") as f:
        return path in f.read()


@pytest.mark.timeout(120)
def test_repeated_get_shares_one_mapping_until_the_last_view_goes(
        small_cluster: Path) -> None:
    ref = jray.put(np.arange(MiB, dtype=np.int64))  # 8 MiB
    path = _segment(ref)
    a = jray.get(ref, timeout=30)
    b = jray.get(ref, timeout=30)
    assert np.shares_memory(a, b) and a is not b
    assert _mapped(path)
    del a
    assert _mapped(path)  # b still uses it
    c = jray.get(ref, timeout=30)
    assert np.shares_memory(b, c)
    del b, c
    assert not _mapped(path)  # the last view went: unmapped
    d = jray.get(ref, timeout=30)  # and a later get maps it afresh
    assert int(d[-1]) == MiB - 1


@pytest.mark.timeout(60)
def test_pool_file_swapped_after_listing_is_checked_on_its_descriptor(
        users: dict[str, pwd.struct_passwd], monkeypatch: pytest.MonkeyPatch) -> None:
    """A file that passes the listing but is someone else's by the time it is opened
    (a race) is unlinked, never written: the check is on the open descriptor."""
    tag = uuid.uuid4().hex[:8]
    pool = f"jray-test{tag}-pool-00000000-"
    planted = shm.segment_path(shm.pool_name(pool, 2 * MiB, 1))
    name = f"jray-test{tag}-object"
    with open(planted, "wb") as f:
        f.write(b"A" * (2 * MiB))
    os.chown(planted, users["attacker"].pw_uid, users["attacker"].pw_gid)
    os.chmod(planted, 0o666)
    keep = os.open(planted, os.O_RDONLY)  # the attacker keeps it open
    try:
        monkeypatch.setattr(shm, "pool_entries", lambda prefix: [(os.path.basename(planted),
                                                                  2 * MiB)])
        secret = _secret_array(2 * MiB)
        shm.write_segment(name, b"x", [memoryview(secret)], pool=pool)
        assert os.pread(keep, 2 * MiB, 0) == b"A" * (2 * MiB)  # not one byte written
        st = os.stat(shm.segment_path(name))
        assert st.st_uid == os.geteuid() and stat.S_IMODE(st.st_mode) == 0o600
        assert st.st_ino != os.fstat(keep).st_ino  # a fresh file, not the planted one
    finally:
        os.close(keep)
        for path in (planted, shm.segment_path(name)):
            if os.path.exists(path):
                os.unlink(path)
