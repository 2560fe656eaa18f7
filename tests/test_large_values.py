"""Large task arguments and results: a result that is a view of an argument's buffer
comes back as a ``LOC_VIEW`` of the argument's segment (no copy), and holds it alive.
"""

from __future__ import annotations

import gc
import glob
import os
import tempfile
from collections.abc import Iterator

import numpy as np
import pytest

import jray
from jray._private import api, shm
from jray._private import protocol as P
from jray._private import serialization as S
from jray.testing import eventually

MiB = 1 << 20


@pytest.fixture
def segment_session() -> Iterator[str]:
    """A session key and a segment prefix of this test's own (no cluster)."""
    with tempfile.TemporaryDirectory() as d:
        os.chmod(d, 0o700)
        shm.new_session_key(d)
        shm.use_session(d)
        prefix = f"jray-test{os.getpid()}-"
        try:
            yield prefix
        finally:
            for path in glob.glob(f"/dev/shm/{glob.escape(prefix)}*"):
                os.unlink(path)


def test_view_of_a_mapped_segment_needs_no_copy(segment_session: str) -> None:
    node = b"n" * 8
    arr = np.arange(2 * MiB // 8, dtype=np.int64)
    base = S.encode(((arr,), {}), segment_session + "base", node)
    assert base[0] == P.LOC_SHM
    (mapped,), _ = S.decode(base)
    view = S.encode(mapped[1000:], segment_session + "out", node, None, [(b"B" * 16, base)])
    assert view[0] == P.LOC_VIEW and view[3] == [b"B" * 16] and view[4] == node
    (name, index, start, nbytes), = view[2]
    assert (name, index, start, nbytes) == (base[1], 0, 8000, arr.nbytes - 8000)
    assert not os.path.exists(shm.segment_path(segment_session + "out"))
    got = S.decode(view)
    np.testing.assert_array_equal(got, arr[1000:])
    assert np.shares_memory(got, mapped)
    # a value with a buffer of its own is copied as before
    fresh = S.encode(mapped + 1, segment_session + "fresh", node, None, [(b"B" * 16, base)])
    assert fresh[0] == P.LOC_SHM


def test_view_past_its_base_is_refused(segment_session: str) -> None:
    node = b"n" * 8
    base = S.encode(np.zeros(MiB // 8), segment_session + "b2", node)
    bad = (P.LOC_VIEW, b"", [(base[1], 0, 8, MiB)], [], node)
    with pytest.raises(shm.Untrusted, match="reaches past"):
        S.decode(bad)


@jray.remote
def same(a: np.ndarray) -> np.ndarray:
    return a


@jray.remote
def tail(a: np.ndarray) -> np.ndarray:
    return a[MiB // 8:]


@jray.remote
def plus_one(a: np.ndarray) -> np.ndarray:
    return a + 1


def _loc(ref: jray.ObjectRef) -> P.Loc:
    return api.client().cache[ref.id]


@pytest.mark.integration
def test_result_that_is_its_argument_is_a_view(cluster: dict[str, object]) -> None:
    arr = np.arange(16 * MiB // 8, dtype=np.int64)
    ref = same.remote(arr)
    got = jray.get(ref, timeout=60)
    np.testing.assert_array_equal(got, arr)
    assert _loc(ref)[0] == P.LOC_VIEW
    part = tail.remote(arr)
    np.testing.assert_array_equal(jray.get(part, timeout=60), arr[MiB // 8:])
    assert _loc(part)[0] == P.LOC_VIEW
    new = plus_one.remote(arr)
    np.testing.assert_array_equal(jray.get(new, timeout=60), arr + 1)
    assert _loc(new)[0] == P.LOC_SHM


@pytest.mark.integration
def test_view_keeps_its_base_until_it_is_freed(cluster: dict[str, object]) -> None:
    prefix = "jray-" + os.path.basename(str(cluster["session_dir"])).split("-")[1] + "-"
    arr = np.full(8 * MiB // 8, 3, dtype=np.int64)
    ref = same.remote(arr)
    del arr  # the driver keeps no copy and no ref to the argument
    assert int(jray.get(ref, timeout=60)[0]) == 3
    view = _loc(ref)
    (base_name, _, _, _), = view[2]
    gc.collect()
    tid = ref.id.hex()[:28]

    def finished() -> bool:
        return any(row["task_id"][:28] == tid and row["state"] == "FINISHED"
                   for row in jray.state.list_tasks(label="same", limit=1000))

    # once the head has finished the task (its pins on the argument are gone), the
    # argument's segment is still there: the view holds it
    assert eventually(finished, 15)
    assert os.path.exists(shm.segment_path(base_name))
    assert int(jray.get(ref, timeout=60)[12345]) == 3
    del ref
    gc.collect()

    def gone() -> bool:
        live = [p for p in glob.glob(f"/dev/shm/{glob.escape(prefix)}*") if "pool-" not in p]
        return shm.segment_path(base_name) not in live

    assert eventually(gone, 15)
