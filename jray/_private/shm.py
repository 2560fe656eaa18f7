"""Shared-memory segments that hold large objects, one file per object in /dev/shm.

Layout of a segment (all integers little-endian)::

    0   magic b"JRY1"
    4   u32 number of out-of-band buffers (n)
    8   u64 length of the pickle stream
    16  n x (u64 offset, u64 length)     one entry per buffer
    ... pickle stream, then each buffer at a 64-byte aligned offset

Readers map the file read-only and hand ``pickle.loads`` memoryviews of the
mapping, so NumPy arrays come back as read-only views with no copy. A mapping
lives as long as any view of it, so unlinking a segment never pulls memory
out from under an array that is still in use.

Freed segments of at least ``POOL_MIN`` bytes that no process maps are kept
by the node daemon in a pool (``<prefix>pool-<node>-<size>-<n>``) instead of
being unlinked: writing into pages tmpfs already holds is about twice as fast
as allocating fresh ones, and the unlink is saved too. A writer claims a pool
file with an atomic ``rename`` (two writers never get the same one).
"""

from __future__ import annotations

import fcntl
import glob
import mmap
import os
import struct

SHM_DIR = "/dev/shm"
_MAGIC = b"JRY1"
_HEAD = struct.Struct("<4sIQ")
_ENTRY = struct.Struct("<QQ")
_ALIGN = 64
#: Only segments at least this large are pooled and claimed (they are reserved).
POOL_MIN = 1 << 20


def _align(n: int) -> int:
    return (n + _ALIGN - 1) & ~(_ALIGN - 1)


def segment_path(name: str) -> str:
    return os.path.join(SHM_DIR, name)


def segment_size(data: bytes, buffers: list[memoryview]) -> int:
    """Bytes a segment holding ``data`` and ``buffers`` takes."""
    pos = _align(_HEAD.size + _ENTRY.size * len(buffers) + len(data))
    for b in buffers:
        pos = _align(pos + b.nbytes)
    return max(pos, 1)


def pool_prefix(shm_prefix: str, node_id: bytes) -> str:
    """Name prefix of the pool files of node ``node_id`` in session ``shm_prefix``."""
    return f"{shm_prefix}pool-{node_id.hex()[:8]}-"


def pool_name(prefix: str, size: int, n: int) -> str:
    return f"{prefix}{size:013d}-{n}"


def pool_entries(prefix: str) -> list[tuple[str, int]]:
    """(name, size) of every pool file named ``prefix``*."""
    out = []
    with os.scandir(SHM_DIR) as it:
        for entry in it:
            name = entry.name
            if name.startswith(prefix):
                try:
                    out.append((name, int(name[len(prefix):].split("-", 1)[0])))
                except ValueError:
                    continue
    return out


def pick(sizes: list[int], need: int) -> int:
    """Index of the pool entry a writer of ``need`` bytes takes, or -1.

    The smallest at least as large, else the largest (it is extended). The
    head predicts claims with the same rule to keep its accounting exact.
    """
    best = -1
    for i, size in enumerate(sizes):
        if best < 0:
            best = i
        elif sizes[best] < need:
            if size > sizes[best]:
                best = i
        elif need <= size < sizes[best]:
            best = i
    return best


def _claim(name: str, pool: str, size: int) -> int | None:
    """Open a pool file renamed to ``name`` (truncated to ``size``), or None."""
    path = segment_path(name)
    for _ in range(4):
        entries = pool_entries(pool)
        i = pick([e[1] for e in entries], size)
        if i < 0 or os.path.exists(path):
            return None
        try:
            os.rename(segment_path(entries[i][0]), path)  # atomic: one writer wins
        except FileNotFoundError:
            continue  # another writer (or the node's trim) took it: look again
        fd = os.open(path, os.O_RDWR)
        if entries[i][1] != size:
            os.ftruncate(fd, size)
        return fd
    return None


def write_segment(name: str, data: bytes, buffers: list[memoryview],
                  pool: str | None = None) -> int:
    """Create segment ``name`` holding ``data`` and ``buffers``; return its size.

    With ``pool`` (a ``pool_prefix``), a large segment reuses a pooled file.
    """
    header = _HEAD.size + _ENTRY.size * len(buffers)
    offsets = []
    pos = _align(header + len(data))
    for b in buffers:
        offsets.append(pos)
        pos = _align(pos + b.nbytes)
    size = max(pos, 1)
    head = bytearray(header)
    _HEAD.pack_into(head, 0, _MAGIC, len(buffers), len(data))
    for i, (off, b) in enumerate(zip(offsets, buffers)):
        _ENTRY.pack_into(head, _HEAD.size + i * _ENTRY.size, off, b.nbytes)
    fd = _claim(name, pool, size) if pool is not None and size >= POOL_MIN else None
    if fd is None:
        fd = os.open(segment_path(name), os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
        # pwrite into tmpfs: the kernel allocates and fills pages in one pass,
        # which is about twice as fast as faulting them in through a mapping.
        os.ftruncate(fd, size)
    try:
        _write_all(fd, memoryview(head), 0)
        _write_all(fd, memoryview(data), header)
        for off, b in zip(offsets, buffers):
            flat = b.cast("B") if b.ndim != 1 or b.format != "B" else b
            _write_all(fd, flat, off)
    finally:
        os.close(fd)
    return size


def _write_all(fd: int, view: memoryview, offset: int) -> None:
    done = 0
    total = view.nbytes
    while done < total:
        done += os.pwrite(fd, view[done:], offset + done)


def read_segment(name: str) -> tuple[memoryview, list[memoryview]]:
    """Map segment ``name`` read-only; return (pickle stream, buffers) as views."""
    fd = os.open(segment_path(name), os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        m = mmap.mmap(fd, size, prot=mmap.PROT_READ)
    finally:
        os.close(fd)
    return _parse(memoryview(m), name)


def read_spilled(path: str, offset: int, size: int) -> tuple[memoryview, list[memoryview]]:
    """Read a spilled segment back into private memory (one copy, read-only views)."""
    buf = bytearray(size)
    with open(path, "rb", buffering=0) as f:
        f.seek(offset)
        got = f.readinto(buf)
    if got != size:
        raise FileNotFoundError(f"spill file {path} is truncated")
    return _parse(memoryview(buf).toreadonly(), path)


def _parse(view: memoryview, name: str) -> tuple[memoryview, list[memoryview]]:
    magic, nbuf, dlen = _HEAD.unpack_from(view, 0)
    if magic != _MAGIC:
        raise ValueError(f"shared-memory segment {name} is corrupt (bad magic {magic!r})")
    header = _HEAD.size + _ENTRY.size * nbuf
    data = view[header : header + dlen]
    bufs = []
    for i in range(nbuf):
        off, ln = _ENTRY.unpack_from(view, _HEAD.size + i * _ENTRY.size)
        bufs.append(view[off : off + ln])
    return data, bufs


def copy_to(name: str, out_fd: int, offset: int) -> int:
    """Write segment ``name`` into ``out_fd`` at ``offset``; return its size."""
    fd = os.open(segment_path(name), os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        m = mmap.mmap(fd, size, prot=mmap.PROT_READ)
    finally:
        os.close(fd)
    try:
        with memoryview(m) as view:
            _write_all(out_fd, view, offset)
    finally:
        m.close()
    return size


def mapped_names(prefix: str) -> set[str]:
    """Names of segments starting with ``prefix`` that some process has mapped now."""
    found: set[str] = set()
    needle = os.path.join(SHM_DIR, prefix)
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/maps") as f:
                for line in f:
                    i = line.find(needle)
                    if i >= 0:
                        found.add(line[i + len(SHM_DIR) + 1 :].split()[0])
        except OSError:
            continue
    return found


def to_pool(name: str, pool: str, n: int) -> str:
    """Rename segment ``name`` into the pool; return its new name ("": unlinked).

    Only a file that no process has mapped or open, and with no other hard
    link, is pooled. The test is a write lease: the kernel grants one only
    while nobody else holds the file (a mapping holds it until unmapped), and
    it is held across the rename. The caller must ignore SIGIO (a lease break).
    """
    path = segment_path(name)
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return ""
    try:
        st = os.fstat(fd)
        if st.st_nlink == 1 and st.st_size >= POOL_MIN:
            try:
                fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_WRLCK)
            except OSError:  # mapped or open somewhere (or no leases here)
                pass
            else:
                new = pool_name(pool, st.st_size, n)
                os.rename(path, segment_path(new))
                return new
        os.unlink(path)
    except FileNotFoundError:
        pass
    finally:
        os.close(fd)  # drops the lease
    return ""


def unlink(name: str) -> None:
    try:
        os.unlink(segment_path(name))
    except FileNotFoundError:
        pass


def cleanup(prefix: str) -> int:
    """Remove every segment whose name starts with ``prefix``; return how many."""
    n = 0
    for path in glob.glob(os.path.join(SHM_DIR, glob.escape(prefix) + "*")):
        try:
            os.unlink(path)
            n += 1
        except FileNotFoundError:
            pass
    return n
