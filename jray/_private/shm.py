"""Shared-memory segments that hold large objects, one file per object in /dev/shm.

Layout of a segment (all integers little-endian)::

    0   magic b"JRY2"
    4   u32 number of out-of-band buffers (n)
    8   u64 length of the pickle stream
    16  16-byte MAC: keyed BLAKE2b (the session key) of bytes 0-16, the entries
        and the pickle stream
    32  n x (u64 offset, u64 length)     one entry per buffer
    ... pickle stream, then each buffer at a 64-byte aligned offset

Readers map the file read-only and hand ``pickle.loads`` memoryviews of the
mapping, so NumPy arrays come back as read-only views with no copy. A mapping
lives as long as any view of it, so unlinking a segment never pulls memory
out from under an array that is still in use; while one lives, another read of
the same segment in the process reuses it (the arrays share memory, as Ray's do).

Trust (see docs/security.md): every file is created exclusively (``O_EXCL``,
mode 0600) and every file opened is checked on its descriptor to be a regular
file owned by this user with no group or other access (``check_private``)
before anything is written to it or read from it. The MAC is checked before
the pickle stream is unpickled; the out-of-band buffers (raw array bytes,
which unpickling never executes) are not hashed, so a get stays zero-copy and
costs the same for 1 KiB as for 1 GiB: their integrity rests on the owner and
mode checks. A segment that fails a check raises ``Untrusted``.

Freed segments of at least ``POOL_MIN`` bytes that no process maps are kept
by the node daemon in a pool (``<prefix>pool-<node>-<size>-<n>``) instead of
being unlinked: writing into pages tmpfs already holds is about twice as fast
as allocating fresh ones, and the unlink is saved too. A writer claims a pool
file with an atomic ``rename`` (two writers never get the same one); files in
the pool's name space that this user did not make are never claimed.
"""

from __future__ import annotations

import errno
import fcntl
import glob
import hashlib
import mmap
import os
import stat
import struct
import weakref

from jray.exceptions import ClusterError, ObjectStoreFullError

SHM_DIR = "/dev/shm"
_MAGIC = b"JRY2"
_HEAD = struct.Struct("<4sIQ16s")
_ENTRY = struct.Struct("<QQ")
_MAC_AT = 16
_ALIGN = 64
#: Only segments at least this large are pooled and claimed (they are reserved).
POOL_MIN = 1 << 20
KEY_FILE = "session.key"
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)

#: The session key that MACs segment headers (set by ``use_session``).
_key = b""
_key_dir = ""
#: segment name -> (device, inode, mapping); the weak reference dies with the last view
_maps: dict[str, tuple[int, int, weakref.ref[mmap.mmap]]] = {}
_MAPS_PURGE = 256


class Untrusted(Exception):
    """A segment or spill file failed a check: wrong owner or mode, truncated, bad MAC."""


# --- private files and the session key ----------------------------------------------
def check_private(fd: int, what: str, *, single_link: bool = True) -> os.stat_result:
    """fstat ``fd``; raise ``Untrusted`` unless it is a regular file of this user, mode
    without group/other bits and (``single_link``) no second hard link."""
    st = os.fstat(fd)
    problem = _problem(st, stat.S_ISREG, single_link)
    if problem:
        raise Untrusted(f"{what} {problem}")
    return st


def check_private_dir(path: str, what: str = "directory") -> None:
    """Raise ``Untrusted`` unless ``path`` is a real directory of this user, mode 0700."""
    try:
        st = os.lstat(path)
    except OSError as exc:
        raise Untrusted(f"{what} {path}: {exc}") from None
    problem = _problem(st, stat.S_ISDIR, False)
    if problem:
        raise Untrusted(f"{what} {path} {problem}")


def _problem(st: os.stat_result, kind: object, single_link: bool) -> str:
    if not kind(st.st_mode):  # type: ignore[operator]
        return f"is not a {'regular file' if kind is stat.S_ISREG else 'directory'}"
    if st.st_uid != os.geteuid():
        return f"is owned by uid {st.st_uid}, not by this user (uid {os.geteuid()})"
    if st.st_mode & 0o077:
        return f"has mode {stat.S_IMODE(st.st_mode):04o}: group or others have access"
    if single_link and st.st_nlink > 1:  # 0: unlinked since it was opened, still ours
        return f"has {st.st_nlink} hard links"
    return ""


def create_private(path: str, dir_fd: int | None = None) -> int:
    """Create ``path`` exclusively, mode 0600, for writing; return the descriptor."""
    return os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR | _NOFOLLOW | _CLOEXEC, 0o600,
                   dir_fd=dir_fd)


def new_session_key(session_dir: str, key: bytes | None = None) -> None:
    """Write a fresh random session key (or ``key``, a cluster's secret) into the
    (private) session directory."""
    check_private_dir(session_dir, "session directory")
    fd = create_private(os.path.join(session_dir, KEY_FILE))
    try:
        os.write(fd, os.urandom(32) if key is None else key)
    finally:
        os.close(fd)


def use_session(session_dir: str) -> None:
    """Load the session's key (once per session directory), checking who made it."""
    global _key, _key_dir
    if _key_dir == session_dir:
        return
    check_private_dir(session_dir, "session directory")
    fd = os.open(os.path.join(session_dir, KEY_FILE), os.O_RDONLY | _NOFOLLOW | _CLOEXEC)
    try:
        check_private(fd, "session key file")
        key = os.read(fd, 64)
    finally:
        os.close(fd)
    if len(key) != 32:
        raise Untrusted(f"session key file in {session_dir} holds {len(key)} bytes, not 32")
    _key, _key_dir = key, session_dir
    _maps.clear()


def session_key() -> bytes:
    """The loaded session key (empty before ``use_session``)."""
    return _key


def _mac(head: bytes | memoryview, entries: memoryview, data: memoryview | bytes) -> bytes:
    h = hashlib.blake2b(head, key=_key, digest_size=16)
    h.update(entries)
    h.update(data)
    return h.digest()


# --- naming -----------------------------------------------------------------------
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
    """(name, size) of every pool file named ``prefix``* that this user made (0600)."""
    out = []
    with os.scandir(SHM_DIR) as it:
        for entry in it:
            name = entry.name
            if name.startswith(prefix):
                try:
                    size = int(name[len(prefix):].split("-", 1)[0])
                    if _problem(entry.stat(follow_symlinks=False), stat.S_ISREG, True):
                        continue  # planted by someone else: never claimed
                except (ValueError, OSError):
                    continue
                out.append((name, size))
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
    """Open a pool file renamed to ``name`` (truncated to ``size``), or None.

    The file is checked on the open descriptor (owner, mode, one link) before
    anything is written: one swapped in between the listing and the rename is
    unlinked, never written.
    """
    path = segment_path(name)
    for _ in range(4):
        entries = pool_entries(pool)
        i = pick([e[1] for e in entries], size)
        if i < 0 or os.path.lexists(path):
            return None
        try:
            os.rename(segment_path(entries[i][0]), path)  # atomic: one writer wins
        except FileNotFoundError:
            continue  # another writer (or the node's trim) took it: look again
        except OSError:
            return None
        try:
            fd = os.open(path, os.O_RDWR | _NOFOLLOW | _CLOEXEC)
        except OSError:
            unlink(name)
            return None
        try:
            check_private(fd, f"pool file {path}")
            if entries[i][1] != size:
                os.ftruncate(fd, size)
        except (Untrusted, OSError):
            os.close(fd)
            unlink(name)
            continue
        return fd
    return None


def write_segment(name: str, data: bytes, buffers: list[memoryview],
                  pool: str | None = None) -> int:
    """Create segment ``name`` holding ``data`` and ``buffers``; return its size.

    With ``pool`` (a ``pool_prefix``), a large segment reuses a pooled file.
    A full /dev/shm raises ``ObjectStoreFullError``; the partial file is removed.
    """
    header = _HEAD.size + _ENTRY.size * len(buffers)
    offsets = []
    pos = _align(header + len(data))
    for b in buffers:
        offsets.append(pos)
        pos = _align(pos + b.nbytes)
    size = max(pos, 1)
    head = bytearray(header)
    _HEAD.pack_into(head, 0, _MAGIC, len(buffers), len(data), b"")
    for i, (off, b) in enumerate(zip(offsets, buffers)):
        _ENTRY.pack_into(head, _HEAD.size + i * _ENTRY.size, off, b.nbytes)
    hv = memoryview(head)
    head[_MAC_AT:_HEAD.size] = _mac(hv[:_MAC_AT], hv[_HEAD.size:], data)
    fd = _claim(name, pool, size) if pool is not None and size >= POOL_MIN else None
    try:
        if fd is None:
            try:
                fd = create_private(segment_path(name))
            except FileExistsError:
                raise ClusterError(
                    f"shared-memory segment {segment_path(name)} already exists and was not "
                    f"made by this session (another process created a file with its name); "
                    f"the object cannot be stored there"
                ) from None
            # pwrite into tmpfs: the kernel allocates and fills pages in one pass,
            # which is about twice as fast as faulting them in through a mapping.
            os.ftruncate(fd, size)
        _write_all(fd, hv, 0)
        _write_all(fd, memoryview(data), header)
        for off, b in zip(offsets, buffers):
            flat = b.cast("B") if b.ndim != 1 or b.format != "B" else b
            _write_all(fd, flat, off)
    except OSError as exc:
        if fd is not None:
            unlink(name)
        if exc.errno in (errno.ENOSPC, errno.ENOMEM, errno.EDQUOT):
            raise ObjectStoreFullError(
                f"shared memory ({SHM_DIR}) is full: writing {size:,} bytes for segment "
                f"{name} failed ({exc.strerror}); free room in {SHM_DIR} or lower "
                f"object_store_memory"
            ) from None
        raise
    finally:
        if fd is not None:
            os.close(fd)
    return size


def _write_all(fd: int, view: memoryview, offset: int) -> None:
    done = 0
    total = view.nbytes
    while done < total:
        done += os.pwrite(fd, view[done:], offset + done)


def read_segment(name: str) -> tuple[memoryview, list[memoryview]]:
    """Map segment ``name`` read-only; return (pickle stream, buffers) as views.

    ``FileNotFoundError`` if it is gone; ``Untrusted`` if it fails a check.
    """
    fd = os.open(segment_path(name), os.O_RDONLY | _NOFOLLOW | _CLOEXEC)
    try:
        st = check_private(fd, f"shared-memory segment {segment_path(name)}")
        hit = _maps.get(name)
        m = hit[2]() if hit is not None and hit[:2] == (st.st_dev, st.st_ino) else None
        if m is None or m.closed or len(m) != st.st_size:
            if st.st_size < _HEAD.size:
                raise Untrusted(f"shared-memory segment {name} is truncated "
                                f"({st.st_size} bytes)")
            m = mmap.mmap(fd, st.st_size, prot=mmap.PROT_READ)
            if len(_maps) >= _MAPS_PURGE:  # drop the entries whose mapping is gone
                for key in [k for k, v in _maps.items() if v[2]() is None]:
                    del _maps[key]
            _maps[name] = (st.st_dev, st.st_ino, weakref.ref(m))
    finally:
        os.close(fd)
    return _parse(memoryview(m), name)


def read_spilled(path: str, offset: int, size: int) -> tuple[memoryview, list[memoryview]]:
    """Read a spilled segment back into private memory (one copy, read-only views)."""
    buf = bytearray(size)
    fd = os.open(path, os.O_RDONLY | _NOFOLLOW | _CLOEXEC)
    try:
        check_private(fd, f"spill file {path}")
        got = os.preadv(fd, [buf], offset)
    finally:
        os.close(fd)
    if got != size:
        raise Untrusted(f"spill file {path} is truncated ({got} of {size} bytes at {offset})")
    return _parse(memoryview(buf).toreadonly(), path)


def _parse(view: memoryview, name: str) -> tuple[memoryview, list[memoryview]]:
    if view.nbytes < _HEAD.size:
        raise Untrusted(f"segment {name} is truncated ({view.nbytes} bytes)")
    magic, nbuf, dlen, mac = _HEAD.unpack_from(view, 0)
    if magic != _MAGIC:
        raise Untrusted(f"segment {name} is corrupt (bad magic {magic!r})")
    header = _HEAD.size + _ENTRY.size * nbuf
    if header + dlen > view.nbytes:
        raise Untrusted(f"segment {name} is truncated or corrupt (header says "
                        f"{header + dlen:,} bytes, it holds {view.nbytes:,})")
    data = view[header : header + dlen]
    if _mac(view[:_MAC_AT], view[_HEAD.size:header], data) != mac:
        raise Untrusted(f"segment {name} failed its integrity check (it was not written "
                        f"by this session, or was altered)")
    bufs = []
    for i in range(nbuf):
        off, ln = _ENTRY.unpack_from(view, _HEAD.size + i * _ENTRY.size)
        if off + ln > view.nbytes:
            raise Untrusted(f"segment {name} is truncated ({view.nbytes:,} bytes, buffer "
                            f"{i} ends at {off + ln:,})")
        bufs.append(view[off : off + ln])
    return data, bufs


def copy_to(name: str, out_fd: int, offset: int) -> int:
    """Write segment ``name`` into ``out_fd`` at ``offset``; return its size."""
    fd = os.open(segment_path(name), os.O_RDONLY | _NOFOLLOW | _CLOEXEC)
    try:
        size = check_private(fd, f"shared-memory segment {name}").st_size
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

    Only a file of this user that no process has mapped or open, and with no
    other hard link, is pooled. The test is a write lease: the kernel grants one
    only while nobody else holds the file (a mapping holds it until unmapped), and
    it is held across the rename. The caller must ignore SIGIO (a lease break).
    """
    path = segment_path(name)
    try:
        fd = os.open(path, os.O_RDONLY | _NOFOLLOW | _CLOEXEC)
    except (FileNotFoundError, OSError):
        unlink(name)
        return ""
    try:
        st = os.fstat(fd)
        if not _problem(st, stat.S_ISREG, True) and st.st_size >= POOL_MIN:
            try:
                fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_WRLCK)
            except OSError:  # mapped or open somewhere (or no leases here)
                pass
            else:
                new = pool_name(pool, st.st_size, n)
                try:
                    os.rename(path, segment_path(new))
                    return new
                except OSError:  # the name is taken by a file we may not replace
                    pass
        os.unlink(path)
    except OSError:
        pass
    finally:
        os.close(fd)  # drops the lease
    return ""


def unlink(name: str) -> None:
    try:
        os.unlink(segment_path(name))
    except OSError:
        pass


def cleanup(prefix: str) -> int:
    """Remove every segment whose name starts with ``prefix``; return how many."""
    n = 0
    for path in glob.glob(os.path.join(SHM_DIR, glob.escape(prefix) + "*")):
        try:
            os.unlink(path)
            n += 1
        except OSError:
            pass
    return n
