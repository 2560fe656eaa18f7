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
"""

from __future__ import annotations

import glob
import mmap
import os
import struct

SHM_DIR = "/dev/shm"
_MAGIC = b"JRY1"
_HEAD = struct.Struct("<4sIQ")
_ENTRY = struct.Struct("<QQ")
_ALIGN = 64


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


def write_segment(name: str, data: bytes, buffers: list[memoryview]) -> int:
    """Create segment ``name`` holding ``data`` and ``buffers``; return its size."""
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
    fd = os.open(segment_path(name), os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
    try:
        # pwrite into tmpfs: the kernel allocates and fills pages in one pass,
        # which is about twice as fast as faulting them in through a mapping.
        os.ftruncate(fd, size)
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
