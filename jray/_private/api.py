"""The process-wide session: ``init``, ``shutdown`` and the object API.

One ``_Session`` per process holds the ``CoreClient`` and, in a driver that
started an embedded cluster, the ``LocalCluster`` handle. Workers attach
their own client at start-up so nested tasks use the same API.

A process forked after ``init`` inherits the session but not its threads or
sockets: there the API raises ``InitError`` (``init()`` in the child starts a
cluster of its own), and its exit never stops the parent's cluster. A ref of a
cluster that was shut down raises ``ObjectLostError`` instead of starting a new
cluster and waiting for it forever.
"""

from __future__ import annotations

import atexit
import math
import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from jray._private import object_ref
from jray._private import protocol as P
from jray._private.cluster import LocalCluster
from jray._private.core import CoreClient
from jray._private.debug import HIDE
from jray._private.object_ref import ObjectRef
from jray._private.resources import DEVICE_SHIFT, validate_demand
from jray.exceptions import ArgumentError, InitError, ObjectLostError

#: How long ``shutdown`` waits for its SHUTDOWN to reach a head that is still starting.
SHUTDOWN_LINGER_MS = 2000
#: How long a cluster query waits for the embedded cluster's node to register.
NODE_WAIT_S = 30.0
#: An optional hook, ``wait_observer(refs, timeout)``, that ``get`` calls
#: before reading the values: it returns once all ``refs`` are ready (or raises). The
#: Jupyter layer (``%load_ext jray``) sets it for a progress bar and interrupt -> cancel;
#: the core never imports that layer. None (the default) costs ``get`` one check.
wait_observer: Callable[[Sequence[ObjectRef], float | None], None] | None = None


class _Session:
    client: CoreClient | None = None
    cluster: LocalCluster | None = None
    #: a driver that joined a cluster (``init(address=)``) holds this instead
    connection: Any = None
    is_worker = False
    info: dict[str, Any] = {}
    lock = threading.Lock()
    #: the process that called ``init`` (a fork of it has another pid)
    pid = 0
    #: session directories of clusters this process shut down
    gone: set[str] = set()


def _forked() -> bool:
    return _Session.client is not None and _Session.pid != os.getpid()


def _forget_inherited() -> None:
    """In a forked child: drop the parent's session without touching it (its refs
    then raise like those of a cluster that was shut down)."""
    if _Session.client is not None:
        _Session.gone.add(os.path.dirname(_Session.client.addr[len("ipc://"):]))
    _Session.client = None
    _Session.cluster = None
    _Session.connection = None
    _Session.is_worker = False
    _Session.info = {}


def _fork_error() -> InitError:
    return InitError(
        f"this process (pid {os.getpid()}) was forked from the jray driver (pid "
        f"{_Session.pid}) after jray.init(): it cannot use its parent's cluster; call "
        f"jray.init() in it to start a cluster of its own, or start child processes with "
        f"multiprocessing's 'spawn' method"
    )


def _check_session(refs: Sequence[ObjectRef], what: str) -> None:
    """Raise if a ref belongs to a cluster this process has shut down."""
    if not _Session.gone:
        return
    for r in refs:
        owner = r.owner
        if owner.startswith("ipc://") and os.path.dirname(owner[6:]) in _Session.gone:
            raise ObjectLostError(
                f"{what}: {r!r} belongs to a jray cluster that was shut down (or, in a "
                f"forked process, its parent's; session {os.path.dirname(owner[6:])}): "
                f"its objects are gone from here"
            )


def _detect_gpus() -> int:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([v for v in visible.split(",") if v.strip() not in ("", "-1")])
    try:
        return len(os.listdir("/proc/driver/nvidia/gpus"))
    except OSError:
        return 0


def _check_count(name: str, value: Any) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"jray.init: {name} must be a number, got {type(value).__name__}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"jray.init: {name} must be a finite number >= 0, got {value}")


def _check_timeout(where: str, timeout: Any) -> float | None:
    """``timeout`` as seconds, or None for no limit (``math.inf`` too); ValueError if bad."""
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise ValueError(f"{where}: timeout must be a number of seconds >= 0 or None, "
                         f"got {type(timeout).__name__} {timeout!r}")
    if math.isnan(timeout) or timeout < 0:
        raise ValueError(f"{where}: timeout must be a number of seconds >= 0 or None, "
                         f"got {timeout!r}")
    return None if math.isinf(timeout) else float(timeout)


def init(
    address: str | None = None,
    *,
    num_cpus: int | None = None,
    num_gpus: int | None = None,
    resources: dict[str, float] | None = None,
    object_store_memory: int | None = None,
    spill_dir: str | None = None,
    ignore_reinit_error: bool = False,
    include_dashboard: bool | None = None,
    log_to_driver: bool = True,
    namespace: str | None = None,
    _secret_file: str | None = None,
    **unsupported: Any,
) -> dict[str, Any]:
    """Start an embedded local cluster (or attach to one) and connect to it.

    Parameters
    ----------
    address: None starts a local cluster (head, node daemon, workers); ``"HOST:PORT"``
        joins the cluster of a head started with ``jray start --head`` (``"auto"``:
        the one started on this machine), proving the secret in ``_secret_file``
        (default ``$JRAY_SECRET_FILE``); leaving it never stops that cluster.
    num_cpus: CPUs of the local node; one worker process per CPU. Default: all.
    num_gpus: GPUs of the local node (may be declared without hardware, for tests).
    resources: custom resources of the local node, e.g. ``{"accelerator": 2}``.
    object_store_memory: bytes of shared memory for objects (default 30% of RAM).
    spill_dir: where objects go when the store is full (default ``$JRAY_SPILL_DIR``
        or the system temp directory); spill files are removed at shutdown.
    ignore_reinit_error: return the running session instead of raising on a second call.
    log_to_driver: False: what tasks and actors print is not shown in this process; it
        goes to the standard streams of the node daemon (those jray was started with).

    Returns
    -------
    A dict describing the session (address, session directory, node id, resources).
    """
    if unsupported:
        raise TypeError(f"jray.init() got unknown option(s): {', '.join(sorted(unsupported))}")
    with _Session.lock:
        if _forked():
            _forget_inherited()
        if _Session.client is not None:
            if ignore_reinit_error or _Session.is_worker:
                return _Session.info
            raise InitError(
                "jray.init() was already called in this process; call jray.shutdown() first "
                "or pass ignore_reinit_error=True"
            )
        if address is not None:
            return _join(address, _secret_file)
        for name, val in (("num_cpus", num_cpus), ("num_gpus", num_gpus),
                          ("object_store_memory", object_store_memory)):
            _check_count(name, val)
        custom = validate_demand(dict(resources or {}), "jray.init(resources=...)")
        for reserved in ("CPU", "GPU"):
            if reserved in custom:
                raise ValueError(
                    f"jray.init: give {reserved} with num_{reserved.lower()}s=, not in resources"
                )
        cpus = float(os.cpu_count() or 1) if num_cpus is None else float(num_cpus)
        gpus = float(_detect_gpus()) if num_gpus is None else float(num_gpus)
        total = {"CPU": cpus, "GPU": gpus, **custom}
        total = {k: v for k, v in total.items() if v > 0}
        if object_store_memory is None:
            try:
                import psutil

                object_store_memory = int(psutil.virtual_memory().total * 0.3)
            except Exception:
                object_store_memory = 2 << 30
        cluster = LocalCluster.start(total, max(1, int(cpus)), int(object_store_memory),
                                     spill_dir)
        client = CoreClient(
            cluster.head_addr, cluster.session_dir, cluster.node_id, cluster.shm_prefix,
            b"d" + os.urandom(7), check_alive=cluster.check_alive,
        )
        if not log_to_driver:  # what tasks print stays in their own (the node's) streams
            client.output_addr = ""
        _Session.client = client
        _Session.cluster = cluster
        _Session.pid = os.getpid()
        _Session.info = {
            "address": cluster.head_addr,
            "session_dir": cluster.session_dir,
            "node_id": cluster.node_id.hex(),
            "resources": total,
            "object_store_memory": object_store_memory,
        }
        return _Session.info


def _join(address: str, secret_file: str | None) -> dict[str, Any]:
    from jray._private.net.connect import connect

    conn, info = connect(address, secret_file)
    try:
        client = CoreClient(conn.head_addr, conn.session_dir, conn.node_id, conn.shm_prefix,
                            b"d" + os.urandom(7), check_alive=conn.watch.check)
    except BaseException:
        conn.close()
        raise
    conn.watch.vouch_for = client.ident
    _Session.client = client
    _Session.connection = conn
    _Session.pid = os.getpid()
    _Session.info = info
    return info


def _attach_worker(client: CoreClient) -> None:
    _Session.client = client
    _Session.is_worker = True
    _Session.pid = os.getpid()
    _Session.info = {"node_id": client.node_id.hex(), "worker": True}


def shutdown() -> None:
    """Stop every process this driver started and remove its files and memory."""
    with _Session.lock:
        if _forked():  # never stop (or delete the files of) the parent's cluster
            _forget_inherited()
            return
        client, cluster = _Session.client, _Session.cluster
        if client is None or _Session.is_worker:
            return
        _Session.client = None
        _Session.cluster = None
        conn, _Session.connection = _Session.connection, None
        if cluster is not None:
            _Session.gone.add(cluster.session_dir)
        if conn is not None:  # a driver that joined leaves the cluster running
            client.to_head.append((P.DRIVER_EXIT,))  # the head ends what it owned
            client.flush()
            client.close(linger_ms=500)
            conn.close()
            return
        try:
            client.to_head.append((P.SHUTDOWN,))
            client.flush()
        finally:
            client.close(linger_ms=SHUTDOWN_LINGER_MS)
            if cluster is not None:
                cluster.stop()


atexit.register(shutdown)


def is_initialized() -> bool:
    """True when this process is connected to a cluster (False in a forked child)."""
    return _Session.client is not None and not _forked()


def client() -> CoreClient:
    c = _Session.client
    if c is not None and _Session.pid != os.getpid():
        raise _fork_error()
    if c is None:
        init()
        c = _Session.client
        assert c is not None
    return c


def _future_of(ref: ObjectRef) -> Any:
    from jray._private import ref_futures  # loads concurrent.futures on first use only

    c = _Session.client
    if c is None:  # a ref outlived its session: starting a new cluster would wait forever
        raise InitError(f"cannot wait for {ref!r}: its jray session has ended (or jray.init() "
                        f"was never called in this process)")
    return ref_futures.future_of(c, ref)


object_ref.set_future_factory(_future_of)


def put(value: Any) -> ObjectRef:
    """Store ``value`` in the object store; return a ref to it."""
    __tracebackhide__ = HIDE  # noqa: F841  (read by IPython and pytest)
    if isinstance(value, ObjectRef):
        raise TypeError("jray.put() of an ObjectRef is not allowed; pass the ref itself")
    return client().put(value)


def get(refs: ObjectRef | Sequence[ObjectRef], *, timeout: float | None = None) -> Any:
    """Wait for and return the value(s) of ``refs`` (one ref or a list of refs).

    Raises the task's error (a ``TaskError`` that is also the original exception
    class), ``GetTimeoutError`` after ``timeout`` seconds, ``TaskCancelledError``,
    ``WorkerCrashedError`` or ``ObjectLostError``. ``timeout=None`` (or
    ``math.inf``) waits as long as it takes. Something that is not a ref (or a
    list of refs) raises ``ArgumentError``, a ``ValueError`` as in Ray.
    """
    __tracebackhide__ = HIDE  # noqa: F841  (read by IPython and pytest)
    timeout = _check_timeout("jray.get", timeout)
    if type(refs) is ObjectRef:
        _check_session((refs,), "jray.get")
        c = client()
        if wait_observer is not None:  # (an interrupt in a notebook cancels the task)
            wait_observer([refs], timeout)
        return c.decode(refs.id, c.get([refs.id], timeout)[0], timeout)
    from jray._private.generators import ObjectRefGenerator

    if isinstance(refs, ObjectRefGenerator):  # as in Ray: the generator itself
        return refs
    if not isinstance(refs, (list, tuple)):
        raise ArgumentError(
            f"jray.get() takes an ObjectRef or a list of ObjectRefs, got {type(refs).__name__}"
        )
    for i, r in enumerate(refs):
        if type(r) is not ObjectRef:
            raise ArgumentError(
                f"jray.get(): item {i} of the list is a {type(r).__name__}, not an ObjectRef"
            )
    _check_session(refs, "jray.get")
    c = client()
    if wait_observer is not None and len(refs) > 1:
        wait_observer(refs, timeout)
    oids = [r.id for r in refs]
    if len(oids) == 1:
        return [c.decode(oids[0], c.get(oids, timeout)[0], timeout)]
    got = c.get_or_fail(oids, timeout)  # returns early at the first error, as in Ray
    if None in got:
        for oid, loc in zip(oids, got):
            if loc is not None and loc[0] == P.LOC_ERROR:
                c.decode(oid, loc, timeout)  # raises the error
    return [c.decode(oid, loc if loc is not None else c.get([oid], timeout)[0], timeout)
            for oid, loc in zip(oids, got)]


def wait(
    refs: Sequence[ObjectRef],
    *,
    num_returns: int = 1,
    timeout: float | None = None,
    fetch_local: bool = True,
) -> tuple[list[ObjectRef], list[ObjectRef]]:
    """Wait until ``num_returns`` of ``refs`` are ready or ``timeout`` passes.

    Returns ``(ready, not_ready)``, both in the order of ``refs``; ``ready``
    holds at most ``num_returns`` refs. ``wait([])`` returns ``([], [])``. An
    ``ObjectRefGenerator`` in ``refs`` is ready when ``next`` on it would not block
    (its next item exists, or it has ended).
    """
    __tracebackhide__ = HIDE  # noqa: F841  (read by IPython and pytest)
    timeout = _check_timeout("jray.wait", timeout)
    if not isinstance(refs, (list, tuple)):
        raise TypeError(f"jray.wait() takes a list of ObjectRefs, got {type(refs).__name__}")
    from jray._private import generators

    gens = False
    for i, r in enumerate(refs):
        if type(r) is not ObjectRef:
            if type(r) is not generators.ObjectRefGenerator:
                raise TypeError(f"jray.wait(): item {i} is a {type(r).__name__}, not an "
                                f"ObjectRef (or ObjectRefGenerator)")
            gens = True
    if len({r.id if type(r) is ObjectRef else id(r) for r in refs}) != len(refs):
        raise ValueError("jray.wait(): the list of refs contains duplicates")
    if not refs:
        return [], []
    if isinstance(num_returns, bool) or not isinstance(num_returns, int) or num_returns < 1:
        raise ValueError(f"jray.wait(): num_returns must be an int >= 1, got {num_returns!r}")
    if num_returns > len(refs):
        raise ValueError(
            f"jray.wait(): num_returns={num_returns} exceeds the number of refs ({len(refs)})"
        )
    _check_session([r for r in refs if type(r) is ObjectRef], "jray.wait")
    if gens:  # a generator is ready when its next item is, or when it has ended
        at = generators.wait_mixed(client(), list(refs), num_returns, timeout)
        is_ready = [i in at for i in range(len(refs))]
    else:
        done = client().wait([r.id for r in refs], num_returns, timeout)
        is_ready = [r.id in done for r in refs]
    ready: list[Any] = []
    not_ready: list[Any] = []
    for r, ok in zip(refs, is_ready):
        if ok and len(ready) < num_returns:
            ready.append(r)
        else:
            not_ready.append(r)
    return ready, not_ready


def cancel(ref: Any, *, force: bool = False, recursive: bool = True) -> None:
    """Cancel the task that produces ``ref``; its ``get`` raises TaskCancelledError.

    A pending task is dropped; a running one gets ``TaskCancelledError`` raised
    inside it (``force=True`` kills its worker instead; the worker is replaced).
    A queued actor call is dropped; a running one of a sync or threaded actor is
    not interrupted (as in Ray) but sees ``get_runtime_context().is_canceled()``;
    an async actor's call is cancelled as an asyncio task. Actor calls refuse
    ``force=True`` (``ValueError``).
    """
    __tracebackhide__ = HIDE  # noqa: F841  (read by IPython and pytest)
    _cancel(ref, bool(force), bool(recursive), False)


def interrupt(ref: Any) -> None:
    """jray-only, not Ray's API (the notebook's interrupt of a cell): ``cancel``,
    except that a running actor call is interrupted too (``actor_executor``)."""
    __tracebackhide__ = HIDE  # noqa: F841  (read by IPython and pytest)
    _cancel(ref, False, True, True)


def _cancel(ref: Any, force: bool, recursive: bool, interrupt: bool) -> None:
    __tracebackhide__ = HIDE  # noqa: F841  (read by IPython and pytest)
    from jray._private.generators import ObjectRefGenerator

    if isinstance(ref, ObjectRefGenerator):  # a generator: cancel the call that yields
        ref = ref.completed()
    if type(ref) is not ObjectRef:
        name = "jray._private.api.interrupt" if interrupt else "jray.cancel"
        raise TypeError(f"{name}() takes an ObjectRef, got {type(ref).__name__}")
    from jray._private import actor_protocol

    if actor_protocol.is_actor_result(ref.id):  # an actor call: see actor_client.cancel
        from jray._private import actor_client

        actor_client.current().cancel(ref.id, force, interrupt)
        return
    client().cancel(ref.id, force, recursive)


def _cluster_query(kind: str) -> Any:
    """Query the head; right after ``init`` wait (bounded) for the local node to register.

    ``init`` does not wait for the node daemon, so without this a query made at
    once would report an empty cluster.
    """
    c = client()
    result = c.query(kind)
    if result or _Session.cluster is None:
        return result
    deadline = time.monotonic() + NODE_WAIT_S
    while not result and time.monotonic() < deadline:
        if c.check_alive is not None:
            c.check_alive()
        time.sleep(0.01)
        result = c.query(kind)
    return result


def nodes() -> list[dict[str, Any]]:
    """One dict per node: id, hostname, resources, availability, worker count."""
    result: list[dict[str, Any]] = _cluster_query("nodes")
    return result


def cluster_resources() -> dict[str, float]:
    """Total resources of all nodes."""
    result: dict[str, float] = _cluster_query("cluster_resources")
    return result


def available_resources() -> dict[str, float]:
    """Resources not held by running tasks right now."""
    result: dict[str, float] = _cluster_query("available_resources")
    return result


def get_gpu_ids() -> list[int | str]:
    """GPU device ids given to the current task or actor (empty in the driver): the
    entries of its ``CUDA_VISIBLE_DEVICES``, ints, or strings where the node was started
    with device UUIDs there."""
    from jray._private import task_context

    task = task_context.running_task()
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    if not _Session.is_worker or not visible or (
            task is not None and not any(i >> DEVICE_SHIFT == 0 for i in task[3])):
        return []
    return [int(v) if v.isdigit() else v for v in (d.strip() for d in visible.split(",")) if v]
